"""Parallel sharding with a document index, and the loader's split across ranks."""

import numpy as np
import pytest

from brlm.data.loader import ShuffledBatches
from brlm.data.shards import open_index, open_shard, write_shard
from brlm.errors import DataError

from .conftest import SENTENCES


def test_parallel_shards_identical_with_index(tmp_path, spm_tokenizer):
    texts = [" ".join(SENTENCES[i % 10 :] + SENTENCES[: i % 10])[: 40 + i] for i in range(50)]
    h1 = write_shard(texts, spm_tokenizer, tmp_path / "a.bin", batch_docs=8)
    h2 = write_shard(texts, spm_tokenizer, tmp_path / "b.bin", batch_docs=8, workers=2)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes() and h1["n_docs"] == h2["n_docs"] == 50
    tokens, index = open_shard(tmp_path / "b.bin"), open_index(tmp_path / "b.bin")
    assert len(index) == 50 and index[0] == 0
    for k in (0, 17, 49):
        end = index[k + 1] if k + 1 < len(index) else len(tokens)
        doc = tokens[index[k] : end]
        assert doc[-1] == spm_tokenizer.eos_id and spm_tokenizer.decode(doc[:-1].tolist()) == texts[k]


def test_ranks_get_disjoint_equal_shares():
    n, world = 103, 4
    seen = []
    for rank in range(world):
        b = ShuffledBatches(n, 5, seed=3, rank=rank, world_size=world)
        epoch = np.concatenate([b.next_indices() for _ in range(5)])  # 25 = n // world windows
        assert len(set(epoch.tolist())) == 25
        seen.append(set(epoch.tolist()))
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 100
    again = ShuffledBatches(n, 5, seed=3, rank=2, world_size=world)
    assert set(np.concatenate([again.next_indices() for _ in range(5)]).tolist()) == seen[2]


def test_rank_state_resume_and_checks():
    a = ShuffledBatches(50, 4, seed=1, rank=1, world_size=2)
    for _ in range(9):
        a.next_indices()
    state = a.state_dict()
    expected = [a.next_indices().tolist() for _ in range(5)]
    b = ShuffledBatches(50, 4, seed=1, rank=1, world_size=2)
    b.load_state_dict(state)
    assert [b.next_indices().tolist() for _ in range(5)] == expected
    with pytest.raises(DataError, match="world_size=2, resuming with 1"):
        ShuffledBatches(50, 4, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="rank=2, world_size=2"):
        ShuffledBatches(50, 4, seed=1, rank=2, world_size=2)
    assert ShuffledBatches(50, 4, 1).state_dict()["world_size"] == 1  # the positional constructor still works


def test_large_epochs_use_a_lazy_bijection(monkeypatch):
    monkeypatch.setattr(ShuffledBatches, "ARRAY_LIMIT", 100)
    for world in (1, 3):
        seen = set()
        for rank in range(world):
            b = ShuffledBatches(1000, 37, seed=5, rank=rank, world_size=world)
            assert b._perm is None
            idx = np.concatenate([b.next_indices() for _ in range(30)])[: 1000 // world]
            seen |= set(idx.tolist())
            assert len(set(idx.tolist())) == 1000 // world
        assert len(seen) == (1000 // world) * world and max(seen) < 1000
    b = ShuffledBatches(1000, 1000, seed=5)
    e0, e1 = b.next_indices(), b.next_indices()
    assert sorted(e0.tolist()) == list(range(1000)) == sorted(e1.tolist()) and e0.tolist() != e1.tolist()
    assert e0[:50].tolist() != list(range(50))
