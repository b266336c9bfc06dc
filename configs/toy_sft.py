# Toy SFT on the built-in task's synthetic trajectories (toy.toy_sft_conversations), CPU, no download.
# toy.sh trains its teacher and its student with it, side by side, the same 4 x 128 model on different data:
#   python train_sft.py --config configs/toy_sft.py --toy_fail 0.25 --out_dir out/toy/teacher_sft
#   python train_sft.py --config configs/toy_sft.py --toy_fail 0.25 --toy_slip 0.3 --seed 1 \
#       --out_dir out/toy/student_sft
# A tiny model first learns the format, then, after a plateau, to copy operands into code and tool output into the
# answer (a phase transition: measured for toy.sh's teacher, a 10-step mean loss below 0.5 at step 124 and below
# 0.05 at step 213, at lr 1e-3 on one thread). At lr 2e-3 the plateau lasted longer in a trial run. docs/toy.md.
# The outputs load with AutoModelForCausalLM.from_pretrained(out/toy/.../step_XXXXXX/model).
model = "toy:toy"
data = "toy"
toy_n = 2000
max_length = 1024
packing = True
batch_size = 16
micro_batch_tokens = 2048
max_steps = 600
lr = 1e-3
min_lr_ratio = 0.1
warmup_ratio = 0.05
weight_decay = 0.0
grad_clip = 1.0
logprob_chunk = 2048
