"""Model families, one readable file each, resolved by name through registry.py."""

from brlm.models.registry import build_model

__all__ = ["build_model"]
