"""State carried between decoding steps, so each new token costs one position, not the whole
context. Protocol shared by every family:

    cache = model.make_cache(batch_size, max_len, device)   # KVCache or an RNN state
    logits, _ = model(idx, cache=cache)                      # positions start at cache.pos
                                                             # and cache.pos advances by T

Attention models store keys/values per layer (GQA-aware: n_kv_head, not n_head); recurrent
models keep their hidden state. A model asks its cache two things: `positions(T, device)` (the
absolute positions of the T new tokens) and `attend(layer, k, v)` (store them, hand back every
key/value with the mask attention needs).

The decoding engine (brlm.infer.engine) batches sequences of different lengths: `cache.rows()`
is the same storage seen with one position per row (`RowKVCache.lengths`, a (B,) tensor), so a
decode step has one fixed shape whatever the rows' lengths (what torch.compile needs, as in
gpt-fast). A new sequence is prefilled into row b through `rows.slot(b)` (a batch-1 KVCache over
that row's storage) and `rows.commit(b, slot)`.

The storage's dtype may differ from the weights': the engine keeps keys and values in fp32 under
bf16 weights on CPU, where attention over the cache runs in the storage's dtype. A decode step's
query against 128 cached positions (8 rows x 4 heads x 64, AMD EPYC Zen 4) took 264 us in
PyTorch's bf16 kernel and 56 us in fp32; one row, 44 against 13 us.

Storage is one tensor per layer (not one (L, ...) tensor): a compiled step then writes each
layer's new keys in place, where a write into a view of a bigger graph input makes inductor copy
the whole layer out and back on every step.
"""

from __future__ import annotations

import torch

Storage = tuple[list[torch.Tensor], list[torch.Tensor]]  # keys, values: per layer (B, nkv, max_len, hd)


class KVCache:
    """Keys/values of every layer, all rows at the same position `pos` (a Python int)."""

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 storage: Storage | None = None):
        shape = (batch_size, n_kv_head, max_len, head_dim)
        if storage is None:
            storage = ([torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)],
                       [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)])
        self.k, self.v = storage
        self.max_len = max_len
        self.pos = 0  # tokens already stored

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        return torch.arange(self.pos, self.pos + T, device=device)  # (T,)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v of shape (B, n_kv_head, T, hs) at [pos, pos+T); return all keys/values so far."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len={self.max_len}")
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """update(), plus what scaled_dot_product_attention needs: (k, v, attn_mask, is_causal)."""
        past, T = self.pos, k.size(2)
        k, v = self.update(layer, k, v)  # (B, nkv, past+T, hs)
        if past == 0:
            return k, v, None, T > 1
        if T == 1:
            return k, v, None, False  # one new query sees every stored position
        # T new queries after `past` stored positions: query i sees keys [0, past + i].
        mask = torch.ones(T, past + T, dtype=torch.bool, device=k.device).tril(diagonal=past)  # (T, past+T)
        return k, v, mask, False

    def advance(self, T: int) -> None:
        """Called once per forward, after every layer has stored its T new positions."""
        self.pos += T

    def reset(self) -> None:
        self.pos = 0

    def rows(self) -> RowKVCache:
        """The same storage with one position per row (all rows empty)."""
        return RowKVCache(self.k, self.v)


class RowKVCache:
    """KV storage where each row b holds `lengths[b]` positions (a (B,) int64 tensor), so one
    decode step serves rows of different lengths. Attention spans the first `span` slots (all
    max_len when None), with a per-row mask (key j visible to a query at position p iff j <= p):
    the shapes change only with the span, which the engine rounds to a few buckets, so a compiled
    step is captured a few times at most. `advance(T)` moves each row by T * advance_by[b] (the
    engine sets 0 for free rows, so they never grow)."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor]):
        self.k, self.v = k, v  # per layer (B, nkv, max_len, hd)
        B, self.max_len = k[0].size(0), k[0].size(2)
        self.lengths = torch.zeros(B, dtype=torch.long, device=k[0].device)
        self.advance_by = torch.ones(B, dtype=torch.long, device=k[0].device)
        self.key_pos = torch.arange(self.max_len, device=k[0].device)  # (max_len,)
        self.row_idx = torch.arange(B, device=k[0].device)[:, None]  # (B, 1)
        # Keys attended: the first `span` slots, which the engine sets to cover every live row
        # (less to read early in a sequence); None: all max_len.
        self.span: int | None = None
        self._pos = self._mask = None

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        # Computed once per forward, shared by every layer's attend().
        self._pos = self.lengths[:, None] + torch.arange(T, device=device)  # (B, T)
        keys = self.key_pos if self.span is None else self.key_pos[: self.span]
        self._mask = keys <= self._pos[:, None, :, None]  # (B, 1, T, span)
        return self._pos

    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        # k[b, :, pos[b, t]] = new[b, :, t]: index_put_ on the whole layer tensor, which inductor
        # performs in place (a scatter_ there became a copy of the layer out and back).
        rows, pos = self.row_idx, self._pos
        dtype = self.k[layer].dtype  # may differ from the model's (the engine keeps fp32 under bf16 weights)
        self.k[layer][rows, :, pos] = k.transpose(1, 2).to(dtype)  # (B, T, nkv, hd): advanced dims first
        self.v[layer][rows, :, pos] = v.transpose(1, 2).to(dtype)
        if self.span is None:
            return self.k[layer], self.v[layer], self._mask, False
        return self.k[layer][:, :, : self.span], self.v[layer][:, :, : self.span], self._mask, False

    def advance(self, T: int) -> None:
        self.lengths.add_(self.advance_by, alpha=T)

    def slot(self, b: int) -> KVCache:
        """An empty batch-1 KVCache writing into row b's storage (to prefill a new sequence)."""
        k, v = [t[b : b + 1] for t in self.k], [t[b : b + 1] for t in self.v]
        return KVCache(len(k), 1, k[0].size(1), k[0].size(3), self.max_len, storage=(k, v))

    def commit(self, b: int, slot: KVCache) -> None:
        """Row b now holds what `slot` (from slot(b)) stored."""
        self.lengths[b] = slot.pos
