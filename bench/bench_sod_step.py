"""Cost of the SOD step weighting inside a whole training step: train_sod.py times each phase, this runs a few
toy steps (tiny models, real HF engine and sandbox) and prints weighting time / step time.

    python bench/bench_sod_step.py [--steps 3] [--student toy:toy_student] [--teacher toy:toy_teacher]
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_sod  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--student", default="toy:toy_student")
    ap.add_argument("--teacher", default="toy:toy_teacher")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        train_sod.main(["--config", "configs/toy.py", "--student", args.student, "--teacher", args.teacher,
                        "--out_dir", out, "--max_steps", str(args.steps), "--val_bench", "", "--save_every", "0",
                        "--dump_every", "0", "--max_response_len", "128", "--prompts_per_step", "8"])
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    w = sum(r["time/weights"] for r in rows)
    total = sum(r["step_time"] for r in rows)
    phases = {k[5:]: sum(r[k] for r in rows) / total for k in rows[0] if k.startswith("time/")}
    print("share of step time: " + ", ".join(f"{k} {v:.2%}" for k, v in phases.items()))
    print(f"SOD weighting: {w / len(rows) * 1e3:.2f} ms per step of {total / len(rows):.2f} s = {w / total:.4%} "
          "of the step (target < 1%)")


if __name__ == "__main__":
    main()
