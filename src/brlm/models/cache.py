"""State carried between decoding steps, so each new token costs one position, not the whole
context. Protocol shared by every family:

    cache = model.make_cache(batch_size, max_len, device)   # KVCache or an RNN state
    logits, _ = model(idx, cache=cache)                      # positions start at cache.pos
                                                             # and cache.pos advances by T

Attention models store keys/values per layer (GQA-aware: n_kv_head, not n_head); recurrent
models keep their hidden state.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # tokens already stored

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v of shape (B, n_kv_head, T, hs) at [pos, pos+T); return all keys/values so far."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len={self.max_len}")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        """Called once per forward, after every layer has stored its T new positions."""
        self.pos += T

    def reset(self) -> None:
        self.pos = 0
