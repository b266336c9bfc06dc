# Toy SFT on the built-in task, CPU. The toy pipeline (toy.sh) trains a teacher (bigger, longer) and a student
# (smaller, briefly) from it:
#   python train_sft.py --config configs/toy_sft.py --model toy:toy_teacher --out_dir out/toy/teacher_sft \
#       --max_steps 150
#   python train_sft.py --config configs/toy_sft.py --model toy:toy_student --out_dir out/toy/student_sft \
#       --max_steps 40
data = "toy"
toy_n = 2000
max_length = 1024
packing = True
batch_size = 16
micro_batch_tokens = 1024
epochs = 1
lr = 2e-3
min_lr_ratio = 0.1
warmup_ratio = 0.05
weight_decay = 0.0
grad_clip = 1.0
