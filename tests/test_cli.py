"""What a user meets at the command line, through the real scripts (a subprocess each, toy models, tiny settings):
--help."""
import dataclasses
import importlib
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT = ["--model", "toy:tiny", "--data", "toy", "--toy_n", "16", "--batch_size", "8", "--micro_batch_tokens", "1200",
       "--max_length", "1024", "--warmup_ratio", "0"]


def env(**extra):
    """No torchrun variables, one thread, and a Hub that refuses at once: a test never waits on the network."""
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return {**e, "OMP_NUM_THREADS": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "CUDA_VISIBLE_DEVICES": "", **extra}


def script(name, *args, timeout=300, **extra_env):
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *args], capture_output=True, text=True,
                          env=env(**extra_env), timeout=timeout)


def one_line(r):
    """The error line of a failed run: exit code 1, no traceback, and exactly one line on stderr."""
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["train_sft", "train_sod", "eval", "rollout"])
def test_help_lists_every_key_with_its_type_and_default(name):
    r = script(f"{name}.py", "--help", timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "dist:" not in r.stdout and "threads:" not in r.stdout  # it stopped before any setup
    lines = r.stdout.splitlines()
    for f in dataclasses.fields(importlib.import_module(name).Config):
        want = rf"  --{f.name} +\S.* +{re.escape(repr(f.default))}( |$)"
        assert any(re.match(want, line) for line in lines), f"--{f.name} (default {f.default!r}) in:\n{r.stdout}"
    if name == "train_sod":  # the dataclass's section comments head their keys
        text = r.stdout
        assert text.index("\nmodels and data:") < text.index("--student") < text.index("\nrollouts:") \
            < text.index("--group_size")
        assert re.search(r"--group_size +int +16 +rollouts per prompt", text)
