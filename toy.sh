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
# The SFT models (configs/toy_sft.py; the same 4 x 128 architecture, each from scratch): name, then train_sft options.
# The teacher's demonstrations are right, a quarter of them recovering from a failed call; the student's are the
# same kind of data but sloppy: 30 % miscopy one digit of an operand into the code (and answer what it prints).
# Setting B's teacher (toy.sh table) never saw a failed call.
STEPS=(--max_steps "${SFT_STEPS:-600}")
TEACHER=(teacher_sft "${STEPS[@]}" --toy_fail 0.25)
STUDENT=(student_sft "${STEPS[@]}" --toy_fail 0.25 --toy_slip 0.3 --seed 1)
TEACHER_CLEAN=(teacher_clean_sft "${STEPS[@]}" --toy_fail 0)
t0=$SECONDS

sft() {  # name, train_sft options...: SFT (resumed if stopped, skipped once its model is saved)
    local name=$1
    shift
    [ -f "$OUT/$name/done" ] || { python train_sft.py --config configs/toy_sft.py --resume --out_dir "$OUT/$name" "$@" \
        >> "$OUT/$name.log" 2>&1 && touch "$OUT/$name/done"; }
    echo "toy.sh: $name trained ($((SECONDS - t0)) s; log $OUT/$name.log)"
}

evaluate() {  # names...: each one's evaluation on the toy benchmark, skipped when its output exists
    for name in "$@"; do
        [ -f "$OUT/eval_$name/toy.json" ] || python eval.py "${EVAL[@]}" --model "$OUT/$name" \
            --out_dir "$OUT/eval_$name" >> "$OUT/$name.log" 2>&1
        echo "toy.sh: $name evaluated ($((SECONDS - t0)) s)"
    done
}

rl() {  # run name, teacher, algo, seed: RL from the student (resumed if stopped, at once if done), its evaluation
    until [ -f "$OUT/$2/done" ]; do  # toy.sh table: setting B's teacher may still be training beside this one
        [ -f "$OUT/$2.failed" ] && { echo "toy.sh: $1 skipped: its teacher's SFT failed ($OUT/$2.log)"; exit 1; }
        sleep 5
    done
    python train_sod.py "${RL[@]}" --resume --student "$OUT/student_sft" --teacher "$OUT/$2" --algo "$3" --seed "$4" \
        --out_dir "$OUT/$1" >> "$OUT/$1.log" 2>&1
    [ -f "$OUT/eval_$1/toy.json" ] || python eval.py "${EVAL[@]}" --model "$OUT/$1" --out_dir "$OUT/eval_$1" \
        >> "$OUT/$1.log" 2>&1
    echo "toy.sh: $1 trained and evaluated ($((SECONDS - t0)) s; log $OUT/$1.log)"
}

if [ "${1:-}" = "job" ]; then  # one job of toy.sh table (run two at a time): an RL cell or setting B's teacher
    shift
    if [ "$1" = "teacher_clean_sft" ]; then
        { sft "${TEACHER_CLEAN[@]}" && evaluate teacher_clean_sft; } || { touch "$OUT/teacher_clean_sft.failed"; exit 1; }
    else
        rl "$@"
    fi
elif [ "${1:-}" = "table" ]; then
    rm -f "$OUT/teacher_clean_sft.failed"
    { sft "${TEACHER[@]}"; evaluate teacher_sft; } & a=$!
    { sft "${STUDENT[@]}"; evaluate student_sft; } & b=$!
    wait $a
    wait $b
    # setting B's teacher trains beside the first RL runs (GRPO and setting A need only the student and teacher A)
    { echo teacher_clean_sft; python toy.py cells; } | xargs -P 2 -L 1 bash "$0" job
    python toy.py table "$OUT" | tee "$OUT/table.md"
    echo "toy.sh table: done in $((SECONDS - t0)) s"
else
    echo "toy.sh: SFT of the teacher and the student side by side (~5 min on 2 cores; logs $OUT/*.log)"
    sft "${TEACHER[@]}" & a=$!
    sft "${STUDENT[@]}" & b=$!
    wait $a
    wait $b
    RUN=$(python toy.py run_name A "$ALGO" "$SEED")
    echo "toy.sh: RL ($ALGO) of the student with the teacher (~4 min), both SFT models evaluated meanwhile"
    evaluate teacher_sft student_sft & a=$!
    rl "$RUN" teacher_sft "$ALGO" "$SEED"
    wait $a
    python train_sod.py --plot "$OUT/$RUN"
    python toy.py summary "$OUT" "$RUN"
    echo "toy.sh: done in $((SECONDS - t0)) s; curves $OUT/$RUN/curves.png, trajectories $OUT/$RUN/samples/"
fi
