"""Inference: sampling filters and autoregressive generation."""
