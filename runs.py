"""A training run's directory: a fresh run never writes beside another run, a resumed one logs each step once, and a
run stopped early (Ctrl-C, SIGTERM, a user error) ends in one line. train_sft.py and train_sod.py call these:

    ckpt = common.latest_checkpoint(cfg.out_dir) if cfg.resume else None
    runs.claim_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite, ckpt)
    ...
    with runs.interrupts_held():
        common.save_checkpoint(...)
    ...
    except (KeyboardInterrupt, SystemExit) as e:
        runs.stopped(e, cfg.out_dir)
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
import threading

import torch.distributed as tdist

# what a run writes into its out_dir (common.save_checkpoint, common.MetricsLogger, report.dump, report.plot)
RUN_FILES = re.compile(r"(\.tmp_|\.del_)?step_\d+|metrics\.jsonl|config\.py|samples|curves\.png")


def claim_out_dir(out_dir, resume, overwrite, ckpt=None):
    """Collective, before anything is written. A fresh run into a directory holding another run's checkpoints or
    metrics.jsonl stops: its steps would interleave with the old ones in metrics.jsonl, and the old run's newest
    checkpoint would pass for its own (what `--model RUN_DIR` loads). --overwrite removes that run's own files first,
    nothing else, and refuses a directory that holds none. A resumed run from checkpoint `ckpt` (None: from scratch)
    drops the metrics.jsonl lines of the steps after it, which it is about to run again."""
    main = int(os.environ.get("RANK", "0")) == 0
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    ours = [n for n in names if RUN_FILES.fullmatch(n)]
    metrics = os.path.join(out_dir, "metrics.jsonl")
    if resume:
        start = int(os.path.basename(ckpt)[5:]) if ckpt else 0
        if main and os.path.exists(metrics):
            kept = [line for line in open(metrics) if json.loads(line)["step"] <= start]
            with open(metrics, "w") as f:
                f.writelines(kept)
    elif overwrite and names and not ours:
        raise SystemExit(f"out_dir: {out_dir} is not a run directory (no checkpoint, no metrics.jsonl); --overwrite "
                         "clears only those: choose another --out_dir")
    elif overwrite and ours and main:
        for n in ours:
            shutil.rmtree(p) if os.path.isdir(p := os.path.join(out_dir, n)) else os.remove(p)
        print(f"out_dir: --overwrite: removed {', '.join(ours)} from {out_dir}", flush=True)
    elif not overwrite and any(n == "metrics.jsonl" or n.startswith("step_") for n in ours):
        steps = [n for n in ours if n.startswith("step_")]
        held = [f"{len(steps)} checkpoint(s) up to {steps[-1]}"] if steps else []
        held += ["metrics.jsonl"] if "metrics.jsonl" in ours else []
        raise SystemExit(f"out_dir: {out_dir} holds an earlier run ({', '.join(held)}); continue it with --resume, "
                         "or pass a new --out_dir, or --overwrite to clear it")
    if tdist.is_initialized():
        tdist.barrier()


@contextlib.contextmanager
def interrupts_held():
    """Hold a Ctrl-C or SIGTERM that arrives inside the block (a checkpoint being written) until the block is done,
    then stop. torch.distributed.checkpoint catches every exception its writers raise, KeyboardInterrupt included, and
    turns it into a CheckpointException traceback (or loses it); held, the checkpoint is finished and the run stops
    with stopped()'s one line. A second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread can set handlers
        yield
        return
    held = []

    def hold(sig, frame):
        if held:
            raise KeyboardInterrupt
        held.append(sig)

    before = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if held:
        raise KeyboardInterrupt


def stopped(e, out_dir):
    """What a training script does with a SystemExit or KeyboardInterrupt (Ctrl-C; SIGTERM, which common.init_dist
    turns into one) that ends it: a user error is said once, by rank 0, not once per rank; an interruption is one
    line from rank 0 with the step reached, the last complete checkpoint (checkpoints are renamed into place whole,
    so there is no half one) and the command that resumes, instead of a traceback per rank. Exit code 1."""
    main = int(os.environ.get("RANK", "0")) == 0
    if isinstance(e, KeyboardInterrupt):
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C does not cut the line short
            signal.signal(sig, signal.SIG_IGN)
        if main:
            try:
                step = f"after step {json.loads(open(os.path.join(out_dir, 'metrics.jsonl')).readlines()[-1])['step']}"
            except (OSError, IndexError, ValueError):
                step = "before the first step"
            ckpt = [d for d in sorted(os.listdir(out_dir)) if re.fullmatch(r"step_\d+", d)] \
                if os.path.isdir(out_dir) else []
            argv, skip = [], False  # sys.argv less any --resume / --resume=x / --resume x, then --resume
            for a, nxt in zip(sys.argv, sys.argv[1:] + [""]):
                if not skip and not re.fullmatch(r"--resume(=.*)?", a):
                    argv.append(a)
                skip = a == "--resume" and not nxt.startswith("--") and nxt != ""
            argv += ["--resume"]
            launch = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE')}" \
                if "TORCHELASTIC_RUN_ID" in os.environ else "python"
            print(f"interrupted {step}; last complete checkpoint: "
                  f"{os.path.join(out_dir, ckpt[-1]) if ckpt else 'none (a resume starts over)'}; to resume: "
                  f"{launch} {shlex.join(argv)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if not main and isinstance(e.code, str):
        raise SystemExit(1) from None
    raise e
