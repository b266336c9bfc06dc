"""Resume restores everything that changes the next update (common.save_checkpoint / load_checkpoint), in 1 and 2
processes: the Adam moments and step counts, the param-group settings (lr, betas, weight decay, eps: the resumed
optimizer is built with other ones), the data cursor and the python, numpy and torch RNG streams. The worker
(tests/resume_worker.py) checkpoints two AdamW steps in, at an lr where fresh moments move the weights by ~0.1, then
compares the resumed run's next two updates with the uninterrupted run's."""
import json
import os
import subprocess
import sys

import pytest
import resume_worker


@pytest.mark.parametrize("nproc", [1, 2])
def test_resume_restores_moments_settings_cursor_and_rngs(tmp_path, nproc, monkeypatch):
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    if nproc == 1:  # in this process: a world of one on its own port, the environment restored afterwards
        for k in keys:
            monkeypatch.delenv(k, raising=False)
        try:
            resume_worker.run(str(tmp_path))
        finally:
            for k in keys:
                os.environ.pop(k, None)
    else:
        env = {k: v for k, v in os.environ.items() if k not in keys}
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                            resume_worker.__file__, str(tmp_path)], capture_output=True, text=True,
                           env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.load(open(tmp_path / "result.json"))
    saved, restored = res["saved_groups"], res["restored_groups"]
    # the settings of the run that saved, not the ones the resumed optimizer was built with
    assert [(g["lr"], g["betas"], g["weight_decay"], g["eps"]) for g in saved] == [(3e-2, [0.8, 0.95], 0.1, 1e-7)]
    assert restored == saved
    # every parameter's moments and step count, exactly
    assert res["params_in_state"] == res["params"] and res["state_keys"] == ["exp_avg", "exp_avg_sq", "step"]
    assert res["state_diff"] == {"exp_avg": 0.0, "exp_avg_sq": 0.0, "step": 0.0}
    assert res["cursor"] == res["end_cursor"] == 16  # the resumed run read the same data
    # the next two updates equal the uninterrupted run's (same world size, deterministic kernels: bit for bit) ...
    assert res["resumed_vs_uninterrupted"] == 0.0
    # ... where fresh moments would not: the check sees lost moments
    assert res["moved"] > 5e-2 and res["fresh_vs_uninterrupted"] > 1e-2
