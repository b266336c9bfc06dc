"""What a user meets at the command line, through the real scripts (a subprocess each, toy models, tiny settings):
--help, one clear line and exit code 1 for each input a user gets wrong (a model that is not there, a damaged data
file, damaged checkpoints, an interruption), output directories that never mix two runs, --limit as used."""
import dataclasses
import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

import common
import runs

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


def test_threads_follow_the_flag_then_the_environment_then_the_idle_cores(monkeypatch, capsys):
    import torch
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert common.set_threads(3) == (3, "--threads") and torch.get_num_threads() == 3
        assert common.set_threads(0) == (1, "OMP_NUM_THREADS") and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")  # more local ranks than cores: one thread each, never none
        n, why = common.set_threads(0)
        assert n == 1 and re.fullmatch(r"\d\.\d of \d+ cores idle, shared by 64 local ranks", why), why
        assert capsys.readouterr().out.splitlines()[-1] == f"threads: 1 ({why}; --threads N sets it)"
    finally:
        torch.set_num_threads(before)


def test_a_model_that_is_not_there_is_one_line_without_the_hub():
    # a relative path with one slash is a path (out/ is where every script writes), never a Hub id
    line = one_line(script("eval.py", "--bench", "toy", "--model", "out/does_not_exist", "--k", "1"))
    assert line == "model: 'out/does_not_exist' does not exist (a local path; a Hub id is org/name)"
    line = one_line(script("train_sod.py", "--student", "x/y/z", "--out_dir", "/nonexistent/never_written"))
    assert line == "model: 'x/y/z' does not exist (a local path; a Hub id is org/name)"
    # a Hub id: offline, or with a Hub that cannot be reached, one line at once instead of five retries
    line = one_line(script("eval.py", "--bench", "toy", "--model", "no-such-org/no-such-model", HF_HUB_OFFLINE="1"))
    assert line.startswith("model: 'no-such-org/no-such-model' is not in the Hub cache and HF_HUB_OFFLINE is set")
    t0 = time.time()
    line = one_line(script("rollout.py", "--model", "no-such-org/no-such-model"))
    assert line.startswith("model: cannot reach the Hub for 'no-such-org/no-such-model' (ConnectError")
    assert time.time() - t0 < 60


def test_a_damaged_data_file_is_one_line_naming_it(tmp_path):
    good = os.path.join(ROOT, "tests", "test_cli.py")  # any file: its first half is not parquet either
    cut = tmp_path / "cut.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"messages": ["[]"] * 50}), tmp_path / "whole.parquet")
    cut.write_bytes((tmp_path / "whole.parquet").read_bytes()[:300])  # a download cut short
    line = one_line(script("train_sft.py", *SFT[:2], "--data", str(cut), "--out_dir", str(tmp_path / "run")))
    assert line.startswith(f"data: {cut} is not a readable parquet file (")
    # the same line for every kind, in this process (data._rows is what every --data goes through)
    import data
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "notes.jsonl").write_text('{"messages": []}\nnot json\n')
    (tmp_path / "blank.jsonl").write_text("\n\n")
    for path, want in [(tmp_path / "empty.parquet", "is not a readable parquet file (Could not open Parquet input"),
                       (tmp_path / "notes.jsonl", ", line 2, is not JSON ("), (tmp_path / "blank.jsonl", " is empty"),
                       (good, ", line 1, is not JSON (")]:
        with pytest.raises(SystemExit) as e:
            data._rows(str(path))
        assert str(e.value).startswith(f"data: {path}") and want in str(e.value) and "\n" not in str(e.value)


def sft_run(out, *extra):
    r = script("train_sft.py", *SFT, "--out_dir", str(out), *extra)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def steps_logged(out):
    return [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))]


def test_resume_passes_over_a_damaged_checkpoint_and_stops_if_none_is_intact(tmp_path):
    out = tmp_path / "run"
    sft_run(out, "--max_steps", "2", "--save_every", "1")
    cut = out / "step_000002" / "model" / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])  # a disk that filled up
    size = cut.stat().st_size
    r = sft_run(out, "--max_steps", "3", "--resume")
    warnings = [line for line in (r.stdout + r.stderr).splitlines() if "damaged" in line]
    assert warnings == [f"warning: skipping damaged checkpoint(s): {cut} (SafetensorError: Error while deserializing "
                        "header: incomplete metadata, file not fully covered); using "
                        f"{out / 'step_000001'} (nothing deleted)"], warnings
    assert f"resume: {out / 'step_000001'} (step 1)" in r.stdout
    assert cut.stat().st_size == size  # left as it was
    assert steps_logged(out) == [1, 2, 3]  # step 2 ran again and is logged once
    # every checkpoint damaged: stop, naming each, and delete nothing
    for step in (1, 3):
        (out / f"step_{step:06d}" / "state.json").write_text("{")
    line = one_line(script("train_sft.py", *SFT, "--out_dir", str(out), "--max_steps", "4", "--resume"))
    assert line.startswith(f"checkpoint: no intact checkpoint in {out}: {out / 'step_000003' / 'state.json'} (")
    assert sorted(d for d in os.listdir(out) if d.startswith("step_")) == ["step_000001", "step_000002", "step_000003"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_where_it_got_in_one_line(tmp_path, sig):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train_sft.py"), *SFT, "--toy_n", "64", "--out_dir", str(out),
           "--max_steps", "200", "--save_every", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                         start_new_session=True)  # a process group of its own, as a terminal's Ctrl-C reaches it
    try:
        while not (out / "step_000002").exists() or len(steps_logged(out)) < 3:
            assert p.poll() is None, p.communicate()
            time.sleep(0.1)
        os.killpg(p.pid, sig)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    r = subprocess.CompletedProcess(cmd, p.returncode, stdout, "\n".join(
        line for line in stderr.splitlines() if "Writing model shards" not in line))  # transformers' progress bar
    line = one_line(r)
    last = max(steps_logged(out))
    ckpt = sorted(d for d in os.listdir(out) if d.startswith("step_"))[-1]  # a save cut short stays a .tmp_ dir
    assert line.startswith(f"interrupted after step {last}; last complete checkpoint: {out / ckpt}; to resume: python ")
    assert common.damage(str(out / ckpt)) is None
    assert shlex.split(line.split("; to resume: ")[1])[1:] == [*cmd[1:], "--resume"]



@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_checkpoint_waits_for_it_and_a_second_one_does_not(sig):
    """torch.distributed.checkpoint turns a KeyboardInterrupt raised inside its writers into a CheckpointException
    traceback (or loses it): a signal that arrives while a checkpoint is written is held until the save is done."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as common.init_dist sets it
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with runs.interrupts_held():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # the handler runs here, in the main thread
                done.append("rest of the save")
        assert done == ["rest of the save"]
        reached = []
        with pytest.raises(KeyboardInterrupt):
            with runs.interrupts_held():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)
                os.kill(os.getpid(), sig)  # a second Ctrl-C: stop now
                time.sleep(0.05)
                reached.append("not reached")
        assert reached == []
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
        with runs.interrupts_held():  # no signal: nothing raised
            pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("given", [[], ["--resume"], ["--resume", "false"], ["--resume=false"], ["--resume", "true"]])
def test_the_resume_command_carries_the_run_flags_and_one_resume(tmp_path, monkeypatch, capsys, given):
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--max_steps", "9", *given, "--out_dir", str(tmp_path)])
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("RANK", "0")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as e:
            runs.stopped(KeyboardInterrupt(), str(tmp_path))
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert e.value.code == 1
    line = capsys.readouterr().err.strip()
    assert shlex.split(line.split("; to resume: ")[1]) == [
        "python", "train_sft.py", "--max_steps", "9", "--out_dir", str(tmp_path), "--resume"]

def test_a_fresh_run_never_writes_into_another_runs_directory(tmp_path):
    old = tmp_path / "old"
    (old / "step_000005" / "model").mkdir(parents=True)
    (old / "metrics.jsonl").write_text('{"step": 5}\n')
    (old / "notes.txt").write_text("mine")
    line = one_line(script("train_sft.py", *SFT, "--out_dir", str(old), "--max_steps", "1"))
    assert line == (f"out_dir: {old} holds an earlier run (1 checkpoint(s) up to step_000005, metrics.jsonl); continue "
                    "it with --resume, or pass a new --out_dir, or --overwrite to clear it")
    assert sorted(os.listdir(old)) == ["metrics.jsonl", "notes.txt", "step_000005"]  # untouched
    # --overwrite: the earlier run's files go, anything else stays, and the new run is alone in its log
    r = sft_run(old, "--max_steps", "1", "--overwrite")
    assert f"out_dir: --overwrite: removed metrics.jsonl, step_000005 from {old}" in r.stdout
    assert sorted(os.listdir(old)) == ["config.py", "metrics.jsonl", "notes.txt", "step_000001"]
    assert steps_logged(old) == [1]
    # a directory that is no run's is never cleared
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.parquet").write_text("x")
    with pytest.raises(SystemExit, match=r"is not a run directory .* --overwrite clears only those"):
        runs.claim_out_dir(str(other), resume=False, overwrite=True)
    assert os.listdir(other) == ["data.parquet"]
    runs.claim_out_dir(str(other), resume=False, overwrite=False)  # no run there: a fresh run may write beside it


def test_eval_reports_the_limit_it_used(tmp_path):
    r = script("eval.py", "--bench", "toy", "--model", "toy:tiny", "--k", "1", "--limit", "2", "--max_turns", "1",
               "--max_response_len", "8", "--rollout_mode", "sync", "--out_dir", str(tmp_path), "--n_boot", "10")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert re.search(r"^eval: toy: 2 of \d+ problems \(0 dropped", r.stdout, re.M), r.stdout
    assert json.load(open(tmp_path / "toy.json"))["metrics"]["problems"] == 2
