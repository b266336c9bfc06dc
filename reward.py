"""reward.py: graders and reward shaping. Not implemented yet."""
