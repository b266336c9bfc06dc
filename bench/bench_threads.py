"""How much one busy neighbour slows a toy SFT step and an SOD step, with torch's default thread count (one per core)
and with common.set_threads (the cores idle at start), in one run.

    python bench/bench_threads.py [--sft_steps 4] [--sod_steps 3] [--student toy:toy_student]

Each measurement is a fresh process running train_sft.main or train_sod.main on the toy (tiny models built from a
config, no files), its step time the median of the steps after the first. `--threads` is torch's default thread
count for the old policy and 0 (set_threads' choice, made with the neighbour already running) for the new. The
neighbour is a spinning Python loop this script starts before and stops after each busy measurement, which follows
its idle one. The machine's other work counts too: the load average is printed with each figure. Runs from any
working directory.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(args):
    """One run in this process; prints {"step": median seconds, "threads": count} as its last line."""
    sys.path.insert(0, ROOT)
    import torch

    import common
    import train_sft
    import train_sod
    threads = str(torch.get_num_threads() if args.policy == "default" else 0)  # a fresh process: torch's default
    with tempfile.TemporaryDirectory() as out:
        if args.child == "sft":
            train_sft.main(["--config", os.path.join(ROOT, "configs", "toy_sft.py"), "--model", args.student,
                            "--out_dir", out, "--toy_n", "64", "--max_steps", str(args.sft_steps),
                            "--threads", threads])
        else:
            train_sod.main(["--config", os.path.join(ROOT, "configs", "toy.py"), "--student", args.student,
                            "--teacher", args.teacher, "--out_dir", out, "--max_steps", str(args.sod_steps),
                            "--val_bench", "", "--save_every", "0", "--dump_every", "0", "--prompts_per_step", "4",
                            "--mini_batch_prompts", "4", "--max_response_len", "96", "--overlong_buffer", "16",
                            "--threads", threads])
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    print(json.dumps({"step": statistics.median(r["step_time"] for r in rows[1:]), "threads": torch.get_num_threads()}))
    common.exit_process()


def measure(args, work, policy):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RANK",
                                                            "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    load = os.getloadavg()[0]
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", work, "--policy", policy,
                        *(f"--{k}={v}" for k, v in vars(args).items() if k not in ("child", "policy"))],
                       capture_output=True, text=True, env=env, timeout=3600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "load": (load + os.getloadavg()[0]) / 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft_steps", type=int, default=4)
    ap.add_argument("--sod_steps", type=int, default=3)
    ap.add_argument("--student", default="toy:toy_student")
    ap.add_argument("--teacher", default="toy:toy_teacher")
    ap.add_argument("--policies", default="default,set_threads", help="which of default,set_threads to measure")
    ap.add_argument("--child", choices=["sft", "sod"], help=argparse.SUPPRESS)
    ap.add_argument("--policy", choices=["default", "set_threads"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    assert args.sft_steps >= 2 and args.sod_steps >= 2, "the first step is dropped as warm-up"
    if args.child:
        return child(args)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    res, policies = {}, args.policies.split(",")
    for work in ("sft", "sod"):
        for policy in policies:  # idle, then busy right after: the machine's other work drifts less in between
            for busy in (False, True):
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    time.sleep(2.0 if busy else 0.0)  # the neighbour is running when set_threads looks
                    res[work, policy, busy] = r = measure(args, work, policy)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
                print(f"  {work} {policy:<11} {'busy' if busy else 'idle'}: {r['threads']} thread(s), step "
                      f"{r['step']:.2f} s, load average {r['load']:.1f}", flush=True)
    print(f"{cores} cores; one busy neighbour; toy SFT step ({args.student}, configs/toy_sft.py) and SOD step "
          f"({args.student} / {args.teacher}, 4 prompts x 4 rollouts of <= 96 tokens); slow-down = busy / idle step:")
    for work in ("sft", "sod"):
        step = {(p, b): res[work, p, b]["step"] for p in policies for b in (False, True)}
        both = [f"set_threads / default: idle {step['set_threads', False] / step['default', False]:.2f}, busy "
                f"{step['set_threads', True] / step['default', True]:.2f}"] if len(policies) == 2 else []
        print(f"{work}: " + "; ".join([", ".join(f"{p} {step[p, True] / step[p, False]:.2f}x" for p in policies),
                                       *both]))


if __name__ == "__main__":
    main()
