"""KV cache / carried state: decoding with it gives exactly the tokens decoding without it gives,
for every architecture in the registry (families added later are covered automatically)."""

import pytest
import torch

from brlm.config import ModelConfig
from brlm.infer.engine import generate
from brlm.infer.sampling import make_sampler, make_stop, repetition_penalty_filter
from brlm.models.registry import ARCHS, build_model


def tiny_model(arch: str, block_size: int = 32, vocab: int = 97):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=2, n_head=4, n_kv_head=2 if arch != "gpt" else 0, n_embd=32,
                      block_size=block_size, dropout=0.0, rnn_hidden=32)
    return build_model(cfg, vocab).eval()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_greedy_with_and_without_cache_identical(arch):
    model = tiny_model(arch)
    if not hasattr(model, "make_cache"):
        pytest.skip(f"{arch} has no make_cache: the engine decodes it without state")
    prompt = [5, 17, 3, 42, 8, 11]
    greedy = make_sampler(0)
    with_cache, info_c = generate(model, prompt, 20, greedy, use_cache=True)
    without, info_n = generate(model, prompt, 20, greedy, use_cache=False)
    assert info_c["cache"] and not info_n["cache"]
    assert len(with_cache) == 20 and with_cache == without


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_cached_logits_match_full_forward(arch):
    model = tiny_model(arch)
    if not hasattr(model, "make_cache"):
        pytest.skip(f"{arch} has no make_cache")
    idx = torch.randint(0, 97, (2, 12))
    full, _ = model(idx)  # (2, 12, V)
    cache = model.make_cache(2, 32, "cpu")
    # prefill 5, then a chunk of 4 (exercises the masked multi-query path), then 3 single steps
    parts = [model(idx[:, :5], cache=cache)[0], model(idx[:, 5:9], cache=cache)[0]]
    parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(9, 12)]
    assert cache.pos == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_gpt_training_path_unchanged_by_cache_argument():
    model = tiny_model("gpt")
    idx = torch.randint(0, 97, (2, 10))
    assert torch.equal(model(idx)[0], model(idx, cache=None)[0])
    assert torch.equal(model(idx, idx)[1], model(idx, idx, cache=None)[1])


def test_cache_reprefills_past_the_context_and_keeps_going():
    model = tiny_model("gpt", block_size=16)
    ids, info = generate(model, list(range(1, 11)), 30, make_sampler(0), use_cache=True)
    assert len(ids) == 30 and info["reprefills"] >= 2
    assert "warning" not in info


def test_long_prompt_truncated_with_warning_in_cached_engine():
    model = tiny_model("gpt", block_size=16)
    ids, info = generate(model, list(range(1, 41)), 3, make_sampler(0))
    assert len(ids) == 3 and "last 15 of 40" in info["warning"]


def test_repetition_penalty_on_known_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    out = repetition_penalty_filter(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 1.0]]
    # greedy picks 0 without the penalty and 3 with it
    assert make_sampler(0)(logits).item() == 0
    assert make_sampler(0, repetition_penalty=2.5)(logits, None, torch.tensor([[0]])).item() == 3


def test_stop_strings_end_generation():
    class Tok:
        def decode(self, ids):
            return "".join("ab\n"[i % 3] for i in ids)

    stop = make_stop(Tok(), ["\n"])
    table = torch.zeros(3, 3)
    table[0, 1] = table[1, 2] = table[2, 0] = 10.0  # 0 -> 1 -> 2 -> 0 ...

    class M(torch.nn.Module):
        block_size = 8

        def forward(self, idx, targets=None):
            return table[idx], None

    ids, info = generate(M(), [0], 10, make_sampler(0), stop=stop)
    assert ids == [1, 2] and info["stopped"] == "stop string '\\n'"


def test_sample_cli_warns_on_long_prompt_and_takes_knobs(tiny_run, tmp_path):
    import json

    from .conftest import SENTENCES, run_cli

    out = tmp_path / "s.json"
    long_prompt = " ".join(SENTENCES)  # far longer than the tiny model's 32-token context
    proc = run_cli("sample", str(tiny_run), "--prompt", long_prompt, "--temperature", "0", "--max-new-tokens", "4",
                   "--repetition-penalty", "1.3", "--stop", "\\n\\n", "--out", str(out), check=True)
    assert "warning: prompt truncated from the left" in proc.stdout
    row = json.loads(out.read_text())[0]
    assert row["repetition_penalty"] == 1.3 and row["cache"] is True and "last 31 of" in row["warning"]
    cached = row["completion"]
    proc = run_cli("sample", str(tiny_run), "--prompt", long_prompt, "--temperature", "0", "--max-new-tokens", "4",
                   "--repetition-penalty", "1.3", "--no-cache", "--out", str(out), check=True)
    row = json.loads(out.read_text())[0]
    assert row["cache"] is False and row["completion"] == cached and row["dtype"] == "fp32" and row["compiled"] is False
    run_cli("sample", str(tiny_run), "--prompt", "O governo", "--max-new-tokens", "4", "--dtype", "bf16", "--out", str(out),
            check=True)
    row = json.loads(out.read_text())[0]
    assert row["dtype"] == "bf16" and row["new_tokens"] == 4
    proc = run_cli("sample", str(tiny_run), "--set", "sample.dtype=fp16")
    assert proc.returncode == 2 and "sample.dtype" in proc.stderr and "fp32, bf16 or auto" in proc.stderr


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_stream_generate_yields_what_generate_returns(arch):
    """stream_generate hands each token over as it is sampled; generate is exactly its collection.
    The caller's code between tokens runs outside inference mode (its own grad mode)."""
    from brlm.infer.engine import stream_generate

    model = tiny_model(arch)
    prompt = [5, 17, 3, 42, 8, 11]
    sampler = make_sampler(0.9, top_k=20)
    collected, info = generate(model, prompt, 12, sampler, generator=torch.Generator().manual_seed(7))
    stream = stream_generate(model, prompt, 12, sampler, generator=torch.Generator().manual_seed(7))
    first = next(stream)
    assert first == collected[0]
    assert not torch.is_inference_mode_enabled()
    rest = []
    with pytest.raises(StopIteration) as done:
        while True:
            rest.append(next(stream))
    assert [first, *rest] == collected
    assert done.value.value["stopped"] == info["stopped"] == "max_new_tokens"
