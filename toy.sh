#!/usr/bin/env bash
# The built-in toy pipeline on a CPU, no download (docs/toy.md): toy SFT of a teacher and a student side by side,
# both evaluated, RL (SOD by default) on the student with the teacher, its evaluation, its curves and the summary.
# What already exists under $OUT is reused, so another algorithm or seed costs one RL run and one evaluation:
#   bash toy.sh                          # everything under out/toy; the last lines: teacher, student before/after
#   ALGO=opd SEED=1 bash toy.sh          # another algorithm (grpo | opd | sod | gated) or RL seed: out/toy/A_opd_seed1
#   bash toy.sh table                    # grpo/opd/sod/gated x 3 seeds x settings A and B, then the table (docs/toy.md)
# Every process runs on one thread and at most two run side by side (a 2-core machine): torch threads never spin
# against each other, and each run repeats to the last digit on one machine whatever else it is doing.
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
OUT=${OUT:-out/toy}
ALGO=${ALGO:-sod}
SEED=${SEED:-0}
mkdir -p "$OUT"
# the distribution RL trains (configs/toy.py), turn-synchronous so that it is reproducible to the last digit
EVAL=(--bench toy --k 2 --top_p 1.0 --max_response_len 256 --max_turns 4 --rollout_mode sync
      --limit "${EVAL_PROBLEMS:-0}")  # 0: all 512 held-out problems
RL=(--config configs/toy.py ${RL_STEPS:+--max_steps "$RL_STEPS"})  # RL_STEPS: fewer steps (a smoke run)
# The SFT recipe: name, model size, steps, lr, train_sft options. The teacher of setting B never saw a failed call.
TEACHER=(teacher_sft toy_teacher "${TEACHER_STEPS:-1000}" 1e-3)
TEACHER_CLEAN=(teacher_clean_sft toy_teacher "${TEACHER_STEPS:-1000}" 1e-3 --toy_fail 0)
STUDENT=(student_sft toy_student "${STUDENT_STEPS:-700}" 2e-3)
t0=$SECONDS

sft() {  # name, size, steps, lr, options...: SFT then its evaluation, each skipped when its output exists
    local name=$1 size=$2 steps=$3 lr=$4
    shift 4
    # done only when its last step is saved; a stopped SFT resumes (or, with no checkpoint yet, starts over)
    [ -d "$OUT/$name/step_$(printf %06d "$steps")" ] || python train_sft.py --config configs/toy_sft.py --resume \
        --model "toy:$size" --out_dir "$OUT/$name" --max_steps "$steps" --lr "$lr" "$@" >> "$OUT/$name.log" 2>&1
    [ -f "$OUT/eval_$name/toy.json" ] || python eval.py "${EVAL[@]}" --model "$OUT/$name" --out_dir "$OUT/eval_$name" \
        >> "$OUT/$name.log" 2>&1
    echo "toy.sh: $name trained and evaluated ($((SECONDS - t0)) s; log $OUT/$name.log)"
}

rl() {  # run name, teacher, algo, seed: RL from the student (resumed if stopped, at once if done), its evaluation
    python train_sod.py "${RL[@]}" --resume --student "$OUT/student_sft" --teacher "$OUT/$2" --algo "$3" --seed "$4" \
        --out_dir "$OUT/$1" >> "$OUT/$1.log" 2>&1
    [ -f "$OUT/eval_$1/toy.json" ] || python eval.py "${EVAL[@]}" --model "$OUT/$1" --out_dir "$OUT/eval_$1" \
        >> "$OUT/$1.log" 2>&1
    echo "toy.sh: $1 trained and evaluated ($((SECONDS - t0)) s; log $OUT/$1.log)"
}

if [ "${1:-}" = "rl" ]; then  # one table cell (toy.sh table runs two at a time)
    shift
    rl "$@"
elif [ "${1:-}" = "table" ]; then
    sft "${TEACHER[@]}" & a=$!
    sft "${STUDENT[@]}" & b=$!
    wait $a
    wait $b
    sft "${TEACHER_CLEAN[@]}"
    python toy.py cells | xargs -P 2 -L 1 bash "$0" rl
    python toy.py table "$OUT" | tee "$OUT/table.md"
    echo "toy.sh table: done in $((SECONDS - t0)) s"
else
    sft "${TEACHER[@]}" & a=$!
    sft "${STUDENT[@]}" & b=$!
    wait $a
    wait $b
    RUN=$(python toy.py run_name A "$ALGO" "$SEED")
    python train_sod.py "${RL[@]}" --resume --student "$OUT/student_sft" --teacher "$OUT/teacher_sft" --algo "$ALGO" \
        --seed "$SEED" --out_dir "$OUT/$RUN"
    [ -f "$OUT/eval_$RUN/toy.json" ] || python eval.py "${EVAL[@]}" --model "$OUT/$RUN" --out_dir "$OUT/eval_$RUN"
    python train_sod.py --plot "$OUT/$RUN"
    python toy.py summary "$OUT" "$RUN"
    echo "toy.sh: done in $((SECONDS - t0)) s; curves $OUT/$RUN/curves.png, trajectories $OUT/$RUN/samples/"
fi
