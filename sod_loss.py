"""sod_loss.py: the SOD loss: step ids, step divergence, step weights, advantages, PPO loss (see issue: loss). Not implemented yet."""
