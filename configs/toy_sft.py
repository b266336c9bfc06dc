# Toy SFT on the built-in task's synthetic trajectories (data.toy_sft_conversations), CPU, no download.
# The toy pipeline (toy.sh) trains two models from it: a teacher (toy_teacher, 4 x 256, longer) and a student
# (toy_student, 4 x 128, briefly, so SOD has room to improve it):
#   python train_sft.py --config configs/toy_sft.py --model toy:toy_teacher --out_dir out/toy/teacher_sft \
#       --max_steps 150
#   python train_sft.py --config configs/toy_sft.py --model toy:toy_student --out_dir out/toy/student_sft \
#       --max_steps 40
# Measured on 2 shared CPU cores: teacher 171 s (loss 6.71 at step 1 -> 0.66 at step 150), student 26 s (6.54 ->
# 1.68 at step 40). The outputs load with AutoModelForCausalLM.from_pretrained(out/toy/.../step_XXXXXX/model).
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
