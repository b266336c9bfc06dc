"""sandbox.py: isolated Python execution for model-written code. Not implemented yet."""
