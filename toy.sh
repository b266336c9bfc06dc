#!/usr/bin/env bash
# The built-in toy pipeline on a CPU, no download (docs/toy.md): toy SFT of a teacher (deeper, longer) and a student
# (shallower, briefly), both evaluated on the toy benchmark, then SOD on the student with the teacher, then the
# student's toy accuracy again. SFT outputs already under $OUT are reused, so baselines and seeds cost one RL run:
#   bash toy.sh                              # everything under out/toy
#   ALGO=grpo bash toy.sh                    # a baseline (grpo | opd | sod | gated) from the same SFT models
#   ALGO=opd SEED=1 bash toy.sh              # another RL seed: out/toy/opd_seed1
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-out/toy}
ALGO=${ALGO:-sod}
SEED=${SEED:-0}
RUN=$ALGO$([ "$SEED" = 0 ] || echo "_seed$SEED")
EVAL=(--bench toy --k 4 --limit 64 --top_p 1.0 --max_response_len 256 --max_turns 4  # the distribution RL trains
      --rollout_mode sync)  # reproducible to the last digit (configs/toy.py says why)
t0=$SECONDS
sft() {  # name, model size, steps, learning rate; skips what already exists
    if compgen -G "$OUT/$1/step_*" > /dev/null; then echo "toy.sh: reusing $OUT/$1"
    else python train_sft.py --config configs/toy_sft.py --model "toy:$2" --out_dir "$OUT/$1" --max_steps "$3" \
        --lr "$4"; fi
    [ -f "$OUT/eval_$1/toy.json" ] || python eval.py "${EVAL[@]}" --model "$OUT/$1" --out_dir "$OUT/eval_$1"
}
sft teacher_sft toy_teacher 1000 1e-3  # the deeper model: at 2e-3 its plateau outlasts the run
sft student_sft toy_student 700 2e-3
python train_sod.py --config configs/toy.py --student "$OUT/student_sft" --teacher "$OUT/teacher_sft" \
    --algo "$ALGO" --seed "$SEED" --out_dir "$OUT/$RUN"
python eval.py "${EVAL[@]}" --model "$OUT/$RUN" --out_dir "$OUT/eval_$RUN"
python train_sod.py --plot "$OUT/$RUN"
python - "$OUT" "$RUN" <<'PY'
import json, sys
out, run = sys.argv[1:]
def acc(name):
    m = json.load(open(f"{out}/eval_{name}/toy.json"))["metrics"]
    return m[f"avg@{m['k']}"]
print(f"toy accuracy (avg@4 at T=1, top_p=1, 64 problems): teacher {acc('teacher_sft'):.3f} | student after SFT "
      f"{acc('student_sft'):.3f} -> after {run} {acc(run):.3f}")
PY
echo "toy.sh: done in $((SECONDS - t0)) s; curves $OUT/$RUN/curves.png, trajectories $OUT/$RUN/samples/"
