"""Windows over a token array and the seeded, resumable order in which training visits them.

A window is `block_size + 1` consecutive tokens starting every `stride` tokens; it is a view into
the memory-mapped shard, never a copy, so stride 1 costs no more memory than stride 256 (the
seeds' stride-1 NumPy windows took 18 GB).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from brlm.errors import DataError


class Windows:
    def __init__(self, tokens: np.ndarray, block_size: int, stride: int, name: str = "data"):
        n = len(tokens)
        if n < block_size + 1:
            raise DataError(
                f"model.block_size={block_size} is larger than the {name} data allows: it has {n} tokens and a "
                f"window needs {block_size + 1}; lower model.block_size or add data"
            )
        if stride < 1:
            raise DataError(f"stride={stride}: expected an integer >= 1")
        self.tokens = tokens
        self.block_size = block_size
        self.stride = stride
        self.n_windows = (n - block_size - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def window(self, i: int) -> np.ndarray:
        start = int(i) * self.stride
        return self.tokens[start : start + self.block_size + 1]

    def batch(self, indices: np.ndarray, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 tensors of shape (B, T): y is x shifted by one token."""
        rows = np.stack([self.window(i) for i in indices]).astype(np.int64)  # (B, T+1), copies only B windows
        t = torch.from_numpy(rows)
        if torch.device(device).type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        return t[:, :-1], t[:, 1:]


def fixed_indices(n_windows: int, k: int) -> np.ndarray:
    """k window indices spread evenly over [0, n_windows): the same set on every run."""
    if k >= n_windows:
        return np.arange(n_windows, dtype=np.int64)
    return np.unique(np.linspace(0, n_windows - 1, k).round().astype(np.int64))


class ShuffledBatches:
    """Batches of window indices, reshuffled each epoch by a generator seeded with (seed, epoch).

    The position (epoch, pos) is all the state there is, so a loader restored from
    `state_dict()` continues with exactly the batches an unbroken run would have drawn.

    Across `torchrun` ranks every rank draws the same permutation (same seed) and keeps every
    `world_size`-th entry from `rank` on, after dropping the tail that would not divide evenly:
    the ranks see disjoint windows, the same number each, and together cover the epoch.

    Up to `ARRAY_LIMIT` windows the permutation is a NumPy array (8 bytes a window). Beyond, it
    is computed on demand by a keyed Feistel network over the window numbers (a bijection, so
    every window still comes exactly once an epoch) in O(batch) memory: 100 M stride-1 windows
    would otherwise need an 800 MB permutation.
    """

    ARRAY_LIMIT = 1 << 22

    def __init__(self, n_windows: int, batch_size: int, seed: int, epoch: int = 0, pos: int = 0, *,
                 rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size")
        if n_windows < world_size:
            raise DataError(f"{n_windows} windows cannot be split across world_size={world_size} ranks; add data or lower train.stride")
        self.n_windows = n_windows
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.pos = pos
        self.rank = rank
        self.world_size = world_size
        self.per_rank = n_windows // world_size
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray | None:
        if self.n_windows > self.ARRAY_LIMIT:
            self._keys = np.random.default_rng([self.seed, epoch]).integers(1, 2**62, size=4, dtype=np.uint64)
            return None
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        if self.world_size == 1:
            return perm
        return perm[: self.per_rank * self.world_size][self.rank :: self.world_size]

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        """A keyed bijection of [0, n_windows): 4 Feistel rounds on 2h bits, cycle-walking back into range."""
        bits = max(2, int(self.n_windows - 1).bit_length())
        h = (bits + 1) // 2
        mask = np.uint64((1 << h) - 1)
        out = x.astype(np.uint64)
        todo = np.ones(len(out), dtype=bool)
        while todo.any():
            v = out[todo]
            left, right = v >> np.uint64(h), v & mask
            for k in self._keys:
                f = (right * np.uint64(0x9E3779B97F4A7C15) + k) & np.uint64(0xFFFFFFFFFFFFFFFF)
                f = (f ^ (f >> np.uint64(29))) & mask
                left, right = right, left ^ f
            v = (left << np.uint64(h)) | right
            out[todo] = v
            todo[todo] = v >= np.uint64(self.n_windows)
        return out.astype(np.int64)

    def _take(self, start: int, count: int) -> np.ndarray:
        if self._perm is not None:
            return self._perm[start : start + count]
        pos = np.arange(start, start + count, dtype=np.int64) * self.world_size + self.rank
        return self._feistel(pos)

    def next_indices(self) -> np.ndarray:
        out = []
        need = self.batch_size
        while need > 0:
            if self.pos >= self.per_rank:
                self.epoch += 1
                self.pos = 0
                self._perm = self._permutation(self.epoch)
            take = self._take(self.pos, min(need, self.per_rank - self.pos))
            out.append(take)
            self.pos += len(take)
            need -= len(take)
        return np.concatenate(out)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", 1) != self.world_size:
            raise DataError(f"loader state was saved with world_size={state.get('world_size', 1)}, resuming with "
                            f"{self.world_size}: resume with the same number of ranks")
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self.pos = state["pos"]
        self._perm = self._permutation(self.epoch)

    @classmethod
    def from_env(cls, n_windows: int, batch_size: int, seed: int) -> "ShuffledBatches":
        """Rank and world size from torchrun's RANK / WORLD_SIZE variables (1 process without them)."""
        import os

        return cls(n_windows, batch_size, seed, rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)))
