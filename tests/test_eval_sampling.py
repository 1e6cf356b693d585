import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from brlm.data.loader import Windows
from brlm.eval.intrinsic import bits_per_byte, evaluate_windows
from brlm.infer.engine import generate
from brlm.infer.sampling import make_sampler, top_k_filter, top_p_filter


class TableModel(nn.Module):
    """A fake LM whose next-token logits depend only on the current token (a bigram table)."""

    def __init__(self, table: torch.Tensor, block_size: int = 8):
        super().__init__()
        self.table = table
        self.block_size = block_size

    def forward(self, idx, targets=None):
        return self.table[idx], None


def test_bits_per_byte_uniform_by_hand():
    # Vocab of 4: id 0 is special (0 bytes), ids 1/2/3 stand for 1/2/3 bytes. Uniform model.
    token_bytes = np.array([0, 1, 2, 3])
    model = TableModel(torch.zeros(4, 4))
    w = Windows(np.array([1, 2, 3, 0, 1], dtype=np.uint16), block_size=4, stride=4)
    r = evaluate_windows(model, w, np.array([0]), token_bytes)
    # targets 2, 3, 0, 1: three text targets of 2 + 3 + 1 = 6 bytes, each costing ln 4 nats;
    # the special target counts neither bytes nor nats: 3 ln4 / (ln2 * 6) = 1.0 bit per byte.
    assert r["bits_per_byte"] == pytest.approx(1.0)
    assert r["bytes"] == 6 and r["tokens"] == 4
    assert r["loss"] == pytest.approx(math.log(4))
    assert r["perplexity"] == pytest.approx(4.0)


def test_bits_per_byte_known_probabilities():
    # After token 1 the model gives token 2 probability 1/2; after 2 it gives 1 probability 1/8.
    p = torch.full((3, 3), 1e-9)
    p[1] = torch.tensor([0.25, 0.25, 0.5])
    p[2] = torch.tensor([0.875 - 1e-9, 0.125, 1e-9])
    p[0] = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    model = TableModel(p.log())
    w = Windows(np.array([1, 2, 1], dtype=np.uint16), block_size=2, stride=1)
    r = evaluate_windows(model, w, np.array([0]), np.array([0, 1, 1]))
    # nats = ln 2 + ln 8 = 4 ln 2 over 2 bytes -> 2 bits per byte; accuracy: argmax after 1 is 2 (right), after 2 is 0 (wrong).
    assert r["bits_per_byte"] == pytest.approx(2.0, rel=1e-6)
    assert r["accuracy"] == pytest.approx(0.5)
    assert bits_per_byte(4 * math.log(2), 2) == pytest.approx(2.0)


def test_top_k_mask():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    out = top_k_filter(logits, 2)
    assert torch.isinf(out[0, [0, 3]]).all() and torch.equal(out[0, [1, 2]], logits[0, [1, 2]])
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_mask_on_known_distribution():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: (~torch.isinf(top_p_filter(logits, p))).nonzero()[:, 1].tolist()  # noqa: E731
    assert kept(0.5) == [1]
    assert sorted(kept(0.8)) == [1, 3]
    assert sorted(kept(0.81)) == [1, 2, 3]
    assert sorted(kept(1.0)) == [0, 1, 2, 3]


def test_greedy_and_seeded_sampling():
    logits = torch.tensor([[0.1, 2.0, 0.3]])
    assert make_sampler(temperature=0)(logits).item() == 1
    s = make_sampler(temperature=1.0, top_k=2)
    draws = [s(logits, torch.Generator().manual_seed(i)).item() for i in range(50)]
    assert set(draws) <= {1, 2}
    assert draws == [s(logits, torch.Generator().manual_seed(i)).item() for i in range(50)]


def test_generate_truncates_long_prompts_with_a_warning():
    table = torch.zeros(5, 5)
    table[:, 3] = 10.0  # always predicts 3
    model = TableModel(table, block_size=4)
    ids, info = generate(model, [1, 2, 1, 2, 1, 2], 3, make_sampler(0))
    assert ids == [3, 3, 3]
    assert "truncated from the left" in info["warning"] and "last 3 of 6" in info["warning"]
    ids, info = generate(model, [1], 5, make_sampler(0), eos_id=3)
    assert ids == [] and info["stopped"] == "eos"
