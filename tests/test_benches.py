"""Every bench runs at a tiny size and prints its summary (each in its own process, from another directory): the
figures in docs/performance.md come from these scripts, so they must keep working. gpu_report.py --dry is in
test_realscale.py, smoke_real_shape.py is run by hand (docs/performance.md)."""
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.parametrize("args, last", [
    (["bench_sod_loss.py", "--small"], "fp32 weight gradient"),
    (["bench_sft.py", "--docs", "8", "--rounds", "1"], "packed / padded = "),
    (["bench_sod_step.py", "--steps", "2", "--rounds", "1", "--prompts", "2"], "best sod / best opd = "),
    (["bench_sandbox.py", "--n", "10", "--n_naive", "3", "--as_root_only"], "sympy       2 |"),
    (["bench_rollout.py", "--model", "toy:tiny", "--repeats", "1", "--speedup", "2000"], "continuous/sync: sim-paper"),
    (["bench_threads.py", "--sft_steps", "2", "--sod_steps", "2", "--student", "toy:tiny", "--teacher", "toy:tiny",
      "--policies", "set_threads"], "sod: set_threads "),
])
def test_bench_runs(args, last, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(BENCH, args[0]), *args[1:]], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert last in r.stdout.strip().splitlines()[-1], r.stdout[-2000:]
