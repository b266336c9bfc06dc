"""train_sft.py: cold-start SFT with FSDP2. Not implemented yet."""
