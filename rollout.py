"""rollout.py: inference engines and the tool-integrated-reasoning agent loop. Not implemented yet."""
