# Cold-start SFT of Qwen3-1.7B on Open-AgentRL-SFT-3K, the paper's settings (docs/algorithm.md): max length 32768, 128
# conversations per step, 5 epochs, on 8 GPUs. The original's micro-batch of 16 conversations per GPU is the whole
# per-GPU share of a step; here it becomes as many packed micro-batches of micro_batch_tokens as those 16 need.
# The optimizer settings, which the paper does not list, are the defaults of verl's SFT trainer that the original
# builds on: AdamW lr 1e-5, betas 0.9/0.95, weight decay 0.01, 10% warmup, cosine to 0, grad clip 1.0.
#   torchrun --nproc_per_node=8 train_sft.py --config configs/sft_qwen3_1.7b.py
# then: torchrun --nproc_per_node=8 train_sod.py --config configs/qwen3_1.7b.py   (student = this out_dir)
model = "Qwen/Qwen3-1.7B"
data = "Gen-Verse/Open-AgentRL-SFT-3K"
out_dir = "out/sft_qwen3_1.7b"
max_length = 32768
truncate = True  # run_sft.sh: data.truncation=right (a longer conversation keeps its first max_length tokens)
packing = True
batch_size = 128
micro_batch_tokens = 32768
epochs = 5
lr = 1e-5
min_lr_ratio = 0.0
warmup_ratio = 0.1
weight_decay = 0.01
grad_clip = 1.0
logprob_chunk = 1024
activation_checkpointing = True
save_every = 25
wandb_project = "sod"
