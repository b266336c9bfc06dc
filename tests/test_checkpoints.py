"""Checkpoints as the scripts use them: models.load_model on a run directory picks its latest complete checkpoint
and computes what the trained model computed; a run resumed under another world size continues the same run."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

import common
import models

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsdp_worker.py")


@pytest.fixture
def one_process_group():
    """A world of one in this process (its own port), torn down and the environment restored afterwards."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.pop(k) for k in keys if k in os.environ}
    dist = common.init_dist("cpu")
    yield dist
    common.destroy_dist()
    for k in keys:
        os.environ.pop(k, None)
    os.environ.update(saved)


def test_load_model_on_a_run_dir_takes_the_latest_checkpoint(tmp_path, one_process_group):
    tok = models.make_toy_tokenizer()
    cfg = dataclasses.make_dataclass("Config", [("lr", float, 1e-3)])()
    saved = {}
    for step, seed in ((2, 1), (10, 2)):  # step 10 sorts after step 2 although "1" < "2"
        model = common.wrap_fsdp(models.tiny_qwen3(tok, "tiny", seed=seed), one_process_group)
        common.save_checkpoint(str(tmp_path), step, model, tok, None, cfg, {})
        saved[step] = model
    os.makedirs(tmp_path / ".tmp_step_000011" / "model")  # a checkpoint whose writing never finished
    loaded, loaded_tok = models.load_model(str(tmp_path))
    assert loaded_tok.get_vocab() == tok.get_vocab()
    x = torch.randint(3, len(tok), (2, 15))
    with torch.no_grad():
        got = loaded(input_ids=x).logits
        want = saved[10](input_ids=x).logits  # the in-memory model that wrote the latest checkpoint
        older = saved[2](input_ids=x).logits
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, older, atol=1e-3)


def run_worker(out, *args, nproc=1):
    cmd = [sys.executable, WORKER, str(out), *args] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", WORKER, str(out),
         *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run_worker(out, "--steps", "3")
    return json.load(open(out / "losses.json")), torch.load(out / "params.pt")


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_under_another_world_size_continues_the_run(tmp_path, uninterrupted, before, after):
    # the worker draws each global batch from the checkpointed RNG and splits it over the ranks, and the loss is a
    # global token mean, so the world size changes neither the data nor the update: resuming a 2-process run's
    # step-1 checkpoint with 1 process (or the reverse) must give the uninterrupted run's steps 2-3, optimizer
    # state (AdamW moments, resharded) included
    run_worker(tmp_path / "split", "--steps", "1", "--save_at", "1", nproc=before)
    log = run_worker(tmp_path / "split", "--steps", "3", "--resume", nproc=after)
    assert f"world size {before} -> {after}" in log
    full, a = uninterrupted
    split = json.load(open(tmp_path / "split" / "losses.json"))
    assert len(split) == 2 and split == pytest.approx(full[1:], abs=1e-5)
    b = torch.load(tmp_path / "split" / "params.pt")
    init = models.tiny_qwen3(models.make_toy_tokenizer(), "tiny", seed=0).state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-2  # three steps did move the weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
