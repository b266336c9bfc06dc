# Toy SFT on the built-in task's synthetic trajectories (data.toy_sft_conversations), CPU, no download.
# The toy pipeline (toy.sh) trains two models from it: a teacher (toy_teacher, 6 x 128, 500 steps) and a student
# (toy_student, 4 x 128, 400 steps, so SOD has room to improve it):
#   python train_sft.py --config configs/toy_sft.py --model toy:toy_teacher --out_dir out/toy/teacher_sft \
#       --max_steps 500
#   python train_sft.py --config configs/toy_sft.py --model toy:toy_student --out_dir out/toy/student_sft \
#       --max_steps 400
# Tiny models first learn the format (loss ~0.65 by step 80), then, after a plateau of ~150-250 steps, to copy
# operands into code and tool output into the answer (a phase transition): a 4-layer student stopped at step 300
# scores 0/64, at 350 about 3 %, at 400 about 27 % (avg@4); the teacher at 500 steps about 39 %.
# The outputs load with AutoModelForCausalLM.from_pretrained(out/toy/.../step_XXXXXX/model).
data = "toy"
toy_n = 2000
max_length = 1024
packing = True
batch_size = 16
micro_batch_tokens = 2048
epochs = 1
lr = 2e-3
min_lr_ratio = 0.1
warmup_ratio = 0.05
weight_decay = 0.0
grad_clip = 1.0
logprob_chunk = 2048
