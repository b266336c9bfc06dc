"""train_sod.py: the SOD training loop with FSDP2. Not implemented yet."""
