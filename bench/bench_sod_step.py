"""What SOD adds to a training step, measured inside whole toy steps of train_sod.main, and the --algo sod step
against the --algo opd step on the same episodes.

1. A recording run (--algo sod): real rollouts with the HF engine and the sandbox, tiny models. All SOD-specific
   work is timed where it runs: sod_loss.sod_advantages (the step weights and the weighted advantage) and
   sod_loss.step_stats (the weights again, for telemetry, and their copy to the host), against the whole step.
2. Replay runs, --algo opd and --algo sod in turn (--rounds of each), from the same initial models, whose rollouts
   return the recorded episodes (the same ids, step by step), so both train on identical data; their steps without
   the rollout phase (scoring, advantages, telemetry, update, weight sync) are compared, the fastest step of each
   algo (on a shared machine other work only ever slows a step down). The first step of every run is dropped.

    python bench/bench_sod_step.py [--steps 4] [--threads 1] [--student toy:toy_student] [--teacher toy:toy_teacher]

Runs from any working directory; the thread count is set here (torch.set_num_threads), not inherited.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import rollout  # noqa: E402
import sod_loss  # noqa: E402
import train_sod  # noqa: E402


def timed(fn, sink):
    """fn wrapped so that each call's wall time is appended to sink."""
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        sink.append(time.perf_counter() - t0)
        return out
    return wrapper


def run(args, algo, out, rollout_fn):
    """One train_sod.main run; returns its metrics rows and the SOD-specific seconds of each step."""
    adv_t, stats_t = [], []
    real = (rollout.rollout, sod_loss.sod_advantages, sod_loss.step_stats)
    rollout.rollout = rollout_fn
    sod_loss.sod_advantages, sod_loss.step_stats = timed(real[1], adv_t), timed(real[2], stats_t)
    try:
        train_sod.main(["--config", os.path.join(ROOT, "configs", "toy.py"), "--student", args.student,
                        "--teacher", args.teacher, "--out_dir", out, "--algo", algo, "--max_steps", str(args.steps),
                        "--val_bench", "", "--save_every", "0", "--dump_every", "0", "--max_response_len", "128",
                        "--prompts_per_step", str(args.prompts), "--mini_batch_prompts", str(args.prompts),
                        "--threads", str(args.threads)])
    finally:
        rollout.rollout, sod_loss.sod_advantages, sod_loss.step_stats = real
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert len(adv_t) == len(stats_t) == len(rows)  # one call of each per step
    return rows, [a + s for a, s in zip(adv_t, stats_t)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (x the toy config's group size)")
    ap.add_argument("--rounds", type=int, default=2, help="replay runs per algo, alternating opd and sod")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--student", default="toy:toy_student")
    ap.add_argument("--teacher", default="toy:toy_teacher")
    args = ap.parse_args()
    assert args.steps >= 2, "the first step is dropped as warm-up"
    torch.set_num_threads(args.threads)
    real_rollout, recorded = rollout.rollout, []

    def record(*a, **kw):
        eps = real_rollout(*a, **kw)
        recorded.append(copy.deepcopy(eps))
        return eps

    def replay():
        calls = iter(recorded)

        def fn(engine, tok, prompt_ids_list, **kw):
            eps = copy.deepcopy(next(calls))
            assert [e.prompt_ids for e in eps] == [list(p) for p in prompt_ids_list], "replay out of step"
            return eps
        return fn

    with tempfile.TemporaryDirectory() as tmp:
        rec_rows, sod_work = run(args, "sod", os.path.join(tmp, "rec"), record)
        replays = {"opd": [], "sod": []}  # per run, its fastest step without the rollout
        for i in range(args.rounds):
            for algo in replays:
                rows, _ = run(args, algo, os.path.join(tmp, f"{algo}{i}"), replay())
                replays[algo].append(min(r["step_time"] - r["time/rollout"] for r in rows[1:]))
    med = lambda xs: statistics.median(xs[1:])
    step, work = med([r["step_time"] for r in rec_rows]), med(sod_work)
    phases = {k[5:]: med([r[k] for r in rec_rows]) / step for k in rec_rows[0] if k.startswith("time/")}
    groups = len(recorded[0]) // args.prompts
    print(f"toy steps of {args.prompts} prompts x {groups} rollouts, {args.student} / {args.teacher}, HF engine, "
          f"sandbox, {torch.get_num_threads()} thread(s)")
    print(f"recording run (--algo sod), medians over steps 2-{args.steps}: step {step:.2f} s = " +
          ", ".join(f"{k} {v:.1%}" for k, v in phases.items()))
    print(f"SOD-specific work (sod_advantages + step_stats): {work * 1e3:.2f} ms per step = {work / step:.3%} of the "
          "step")
    t_opd, t_sod = min(replays["opd"]), min(replays["sod"])
    runs = lambda algo: ", ".join(f"{t:.3f}" for t in replays[algo])
    print(f"same episodes, fastest step without rollout per run (steps 2-{args.steps}): --algo opd {runs('opd')} s, "
          f"--algo sod {runs('sod')} s; best sod / best opd = {t_sod / t_opd:.3f}")


if __name__ == "__main__":
    main()
