#!/usr/bin/env bash
# The built-in toy pipeline on a CPU, no download (DESIGN §7): toy SFT of a teacher (bigger, longer) and a student
# (smaller, briefly), both evaluated on the toy benchmark, then SOD on the student with the teacher, then the
# student's toy accuracy again.
#   bash toy.sh                              # everything under out/toy
#   OUT=out/toy_grpo ALGO=grpo bash toy.sh   # a baseline instead of SOD
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-out/toy}
ALGO=${ALGO:-sod}
EVAL=(--bench toy --k 1 --limit 64 --top_p 1.0 --max_response_len 256 --max_turns 4)
t0=$SECONDS
python train_sft.py --config configs/toy_sft.py --model toy:toy_teacher --out_dir "$OUT/teacher_sft" --max_steps 150
python train_sft.py --config configs/toy_sft.py --model toy:toy_student --out_dir "$OUT/student_sft" --max_steps 40
python eval.py "${EVAL[@]}" --model "$OUT/teacher_sft" --out_dir "$OUT/eval_teacher_sft"
python eval.py "${EVAL[@]}" --model "$OUT/student_sft" --out_dir "$OUT/eval_student_sft"
python train_sod.py --config configs/toy.py --student "$OUT/student_sft" --teacher "$OUT/teacher_sft" \
    --algo "$ALGO" --out_dir "$OUT/$ALGO"
python eval.py "${EVAL[@]}" --model "$OUT/$ALGO" --out_dir "$OUT/eval_$ALGO"
python train_sod.py --plot "$OUT/$ALGO"
python - "$OUT" "$ALGO" <<'PY'
import json, sys
out, algo = sys.argv[1:]
def acc(name):
    m = json.load(open(f"{out}/eval_{name}/toy.json"))["metrics"]
    return m[f"avg@{m['k']}"]
print(f"toy accuracy: teacher {acc('teacher_sft'):.3f} | student after SFT {acc('student_sft'):.3f}"
      f" -> after {algo} {acc(algo):.3f}")
PY
echo "toy.sh: done in $((SECONDS - t0)) s; curves $OUT/$ALGO/curves.png, trajectories $OUT/$ALGO/samples/"
