"""Evaluation: intrinsic metrics on fixed windows (loss, perplexity, accuracy, bits per byte)."""
