# SOD on the built-in toy task, CPU, ~3.5 minutes on one thread (toy.sh runs the whole pipeline).
#   python train_sod.py --config configs/toy.py [--algo grpo|opd|sod] [--seed 1] [--out_dir out/toy/sod]
student = "out/toy/student_sft"  # toy SFT outputs (configs/toy_sft.py)
teacher = "out/toy/teacher_sft"
data = "toy"
val_bench = "toy"
val_limit = 64
val_k = 2
val_temperature = 1.0
val_top_p = 1.0
out_dir = "out/toy/sod"
algo = "sod"
backend = "hf"
prompts_per_step = 16
group_size = 4
mini_batch_prompts = 8
max_turns = 4
max_prompt_len = 2048
max_response_len = 256
protocol = "clean"
# Turn-synchronous rollouts: a turn's batch never depends on how fast the tools answered, so a run is reproducible
# to the last digit on a given machine and thread count. Continuous rollouts (the default elsewhere) batch turns as
# tool results arrive; a different batch rounds logits differently (~1e-6), which can flip a token on a near tie,
# and the runs drift apart from there. On this CPU workload they are only ~1.15x faster (docs/performance.md).
rollout_mode = "sync"
overlong_buffer = 32
# Small steps: at 2e-4 (or 5e-4) Adam's first updates broke the student's copying within ~10 steps (training accuracy
# 66 -> 47 %, recoveries after a failed call 45 -> 0 %); at 5e-5 it rose to ~80 % (docs/toy.md).
lr = 5e-5
micro_batch_tokens = 16384
max_steps = 20
eval_every = 10
save_every = 10
dump_every = 10
