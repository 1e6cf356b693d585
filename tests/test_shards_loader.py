import numpy as np
import pytest

from brlm.data.loader import ShuffledBatches, Windows, fixed_indices
from brlm.data.shards import dtype_for, open_shard, write_shard
from brlm.errors import DataError


def test_dtype_by_vocab():
    assert dtype_for(65536) == np.uint16
    assert dtype_for(65537) == np.uint32


def test_shard_round_trip(tmp_path, spm_tokenizer):
    texts = ["Olá, mundo.", "Segunda frase do corpus."]
    header = write_shard(texts, spm_tokenizer, tmp_path / "s.bin")
    tokens = open_shard(tmp_path / "s.bin")
    assert isinstance(tokens, np.memmap)
    expected = []
    for t in texts:
        expected += spm_tokenizer.encode(t) + [spm_tokenizer.eos_id]
    assert tokens.tolist() == expected
    assert header["n_docs"] == 2 and header["n_tokens"] == len(expected)


def test_truncated_shard_is_detected(tmp_path, spm_tokenizer):
    write_shard(["Olá, mundo. " * 20], spm_tokenizer, tmp_path / "s.bin")
    data = (tmp_path / "s.bin").read_bytes()
    (tmp_path / "s.bin").write_bytes(data[:-2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        open_shard(tmp_path / "s.bin")


def test_windows_are_views_with_any_stride():
    tokens = np.arange(1000, dtype=np.uint16)
    for stride in (1, 3, 64):
        w = Windows(tokens, block_size=16, stride=stride)
        assert len(w) == (1000 - 17) // stride + 1
        last = w.window(len(w) - 1)
        assert len(last) == 17 and np.shares_memory(last, tokens)
        assert w.window(2)[0] == 2 * stride
    x, y = Windows(tokens, 16, 4).batch(np.array([0, 5]))
    assert x.shape == (2, 16) and (y[:, :-1] == x[:, 1:]).all() and x[1, 0].item() == 20


def test_block_size_larger_than_data():
    with pytest.raises(DataError, match="model.block_size=64 is larger than the validation data allows: it has 50 tokens"):
        Windows(np.zeros(50, dtype=np.uint16), 64, 1, name="validation")


def test_fixed_indices_are_stable_and_spread():
    a = fixed_indices(1000, 10)
    assert a.tolist() == fixed_indices(1000, 10).tolist()
    assert a[0] == 0 and a[-1] == 999 and len(a) == 10
    assert fixed_indices(5, 10).tolist() == [0, 1, 2, 3, 4]


def test_shuffled_batches_cover_each_epoch_and_reshuffle():
    b = ShuffledBatches(n_windows=12, batch_size=4, seed=7)
    epoch0 = np.concatenate([b.next_indices() for _ in range(3)])
    epoch1 = np.concatenate([b.next_indices() for _ in range(3)])
    assert sorted(epoch0.tolist()) == list(range(12)) == sorted(epoch1.tolist())
    assert epoch0.tolist() != epoch1.tolist()
    again = ShuffledBatches(n_windows=12, batch_size=4, seed=7)
    assert epoch0.tolist() == np.concatenate([again.next_indices() for _ in range(3)]).tolist()


def test_shuffled_batches_resume_exactly():
    a = ShuffledBatches(n_windows=10, batch_size=3, seed=1)
    for _ in range(5):
        a.next_indices()
    state = a.state_dict()
    expected = [a.next_indices().tolist() for _ in range(6)]
    b = ShuffledBatches(n_windows=10, batch_size=3, seed=99)
    b.load_state_dict(state)
    assert [b.next_indices().tolist() for _ in range(6)] == expected


def test_batch_larger_than_windows_wraps_epochs():
    b = ShuffledBatches(n_windows=3, batch_size=7, seed=0)
    assert len(b.next_indices()) == 7
