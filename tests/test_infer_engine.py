"""The batched decoding engine: exact greedy equality with uncached one-at-a-time decoding, for
every architecture in the registry, with rows of different prompt lengths, rows admitted mid-way
into freed slots (continuous batching), the repetition penalty, and a compiled decode step."""

import pytest
import torch

from brlm.config import ModelConfig
from brlm.infer.engine import Engine, generate
from brlm.infer.sampling import make_sampler
from brlm.models.registry import ARCHS, build_model

PROMPTS = [[5, 17, 3, 42, 8, 11], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [60, 61, 62], [9, 9]]


def tiny_model(arch: str, block_size: int = 32, vocab: int = 97):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=2, n_head=4, n_kv_head=2 if arch != "gpt" else 0, n_embd=32,
                      block_size=block_size, dropout=0.0, rnn_hidden=32)
    return build_model(cfg, vocab).eval()


def uncached(model, prompt, n, sampler):
    return generate(model, prompt, n, sampler, use_cache=False)[0]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_batched_rows_of_different_lengths_equal_uncached_decoding(arch):
    model = tiny_model(arch)
    greedy = make_sampler(0)
    want = [uncached(model, p, 12, greedy) for p in PROMPTS]
    got = Engine(model, max_batch=len(PROMPTS)).generate_batch(PROMPTS, 12, greedy)
    assert [ids for ids, _ in got] == want
    assert all(info["stopped"] == "max_new_tokens" and info["cache"] for _, info in got)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_continuous_admission_equals_isolated_runs(arch):
    """Two rows for five prompts: each new prompt enters a slot freed mid-way, beside a row that is
    already decoding, and lengths differ (some rows finish early on their own max_new_tokens)."""
    model = tiny_model(arch, block_size=16)  # short context: rows re-prefill while others decode
    greedy = make_sampler(0, repetition_penalty=1.3)
    lengths = [20, 3, 9, 14, 5]
    # Isolated runs through the cached path: past the context a re-prefill (not a sliding window,
    # as uncached decoding) decides what the model sees, so these are the reference here.
    want = [generate(model, p, n, greedy)[0] for p, n in zip(PROMPTS, lengths)]
    engine = Engine(model, max_batch=2)
    got: dict[int, list[int]] = {}
    owner = {engine.add(PROMPTS[0], lengths[0], greedy): 0}
    got[0] = []
    pending = [1, 2, 3, 4]
    while owner:
        for slot, token, stopped in engine.step():
            got[owner[slot]].append(token)
            if stopped:
                del owner[slot]
        if pending and engine.free_slots():  # admit between steps, as a server's scheduler does
            i = pending.pop(0)
            owner[engine.add(PROMPTS[i], lengths[i], greedy)] = i
            got[i] = []
    assert [got[i] for i in range(5)] == want


def test_eos_and_release_retire_rows_and_free_their_slot():
    model = tiny_model("llama")
    greedy = make_sampler(0, repetition_penalty=3.0)  # a tiny random model repeats itself otherwise
    ref = uncached(model, PROMPTS[2], 8, greedy)
    i = next(i for i in range(1, 8) if ref[i] not in ref[:i])  # the first id not seen before
    engine = Engine(model, max_batch=2)
    a = engine.add(PROMPTS[2], 8, greedy, eos_id=ref[i])
    b = engine.add(PROMPTS[1], 8, greedy)
    events = [engine.step() for _ in range(i + 1)]
    assert [e for e in events[-1] if e.slot == a] == [(a, ref[i], "eos")]
    assert engine.free_slots() == [a] and engine.last_info[a]["stopped"] == "eos"
    assert engine.release(b)["stopped"] == "released" and engine.free_slots() == [0, 1]
    assert engine.step() == []


def test_sampled_batches_are_seeded():
    model = tiny_model("gpt")
    sampler = make_sampler(0.9, top_k=20)
    runs = [Engine(model, max_batch=3).generate_batch(PROMPTS[:3], 10, sampler, generator=torch.Generator().manual_seed(1))
            for _ in range(2)]
    ids = [[ids for ids, _ in run] for run in runs]
    assert ids[0] == ids[1] and all(len(x) == 10 for x in ids[0])


def test_history_grows_past_its_first_size():
    model = tiny_model("rnn", block_size=8)  # a carried state: no context limit, no re-prefill
    greedy = make_sampler(0, repetition_penalty=1.2)
    engine = Engine(model, max_batch=1)
    first = engine.hist.size(1)
    (ids, info), = engine.generate_batch([[3, 4]], first + 50, greedy)
    assert len(ids) == first + 50 and engine.hist.size(1) > first and info["reprefills"] == 0
    assert ids == uncached(model, [3, 4], first + 50, greedy)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_decode_step_is_captured_by_torch_compile(arch):
    """The fixed-shape step is one graph (moe: its routing's nonzero splits it); run through
    Dynamo (aot_eager: the capture without inductor's minutes of code generation) it gives the
    eager tokens. tests/test_models_zoo.py covers the training graph."""
    from brlm.infer.engine import _decode_step

    model = tiny_model(arch)
    greedy = make_sampler(0)
    engine = Engine(model, max_batch=2)
    engine.add(PROMPTS[0], 4, greedy), engine.add(PROMPTS[1], 4, greedy)
    with torch.inference_mode():
        explained = torch._dynamo.explain(_decode_step)(engine.model, engine.tokens, engine.cache)
    assert explained.graph_break_count == 0 or arch == "moe"
    torch._dynamo.reset()
    eager = Engine(model, max_batch=3).generate_batch(PROMPTS[:3], 10, greedy)
    compiled = Engine(model, max_batch=3, compile="aot_eager").generate_batch(PROMPTS[:3], 10, greedy)
    assert [ids for ids, _ in compiled] == [ids for ids, _ in eager]


def test_warm_up_leaves_every_row_free_and_changes_no_answer():
    model = tiny_model("llama")
    greedy = make_sampler(0)
    want = [ids for ids, _ in Engine(model, max_batch=2).generate_batch(PROMPTS, 8, greedy)]
    engine = Engine(model, max_batch=2)
    assert engine.warm_up() > 0
    assert engine.free_slots() == [0, 1]
    assert [ids for ids, _ in engine.generate_batch(PROMPTS, 8, greedy)] == want


def test_bf16_weights_decode_a_copy_and_leave_the_model_fp32():
    model = tiny_model("llama")
    engine = Engine(model, max_batch=2, dtype="bf16")
    assert engine.model is not model and next(engine.model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    outs = engine.generate_batch(PROMPTS[:2], 6, make_sampler(0))
    assert [len(ids) for ids, _ in outs] == [6, 6]


@pytest.mark.parametrize("arch", ["gpt", "llama", "moe"])
def test_bf16_weights_keep_keys_and_values_in_fp32_on_cpu(arch):
    """PyTorch's bf16 attention kernel is several times slower than fp32 for a decode step's one
    query on CPU (models/cache.py), so the engine stores the cache in fp32 and attends in fp32; the
    step's logits are the bf16 model's own, to bf16 rounding."""
    model = tiny_model(arch)
    engine = Engine(model, max_batch=2, dtype="bf16")
    assert engine.cache.k[0].dtype == torch.float32 and engine.describe()["cache_dtype"] == "fp32"
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    prompt = PROMPTS[2]
    engine.add(prompt, 4, make_sampler(0))  # prefill into row 0 (the batch-1 KVCache path)
    with torch.inference_mode():
        step = engine._forward()[0].float()  # the decode step (the per-row cache path)
        full = engine.model(torch.tensor([prompt]))[0][0, -1].float()  # no cache, all in bf16
    assert step.dtype == torch.float32 and torch.isfinite(step).all()
    torch.testing.assert_close(step, full, atol=0.05, rtol=0.02)
    engine.release(0)
    # the ordinary path: whole generations, rows of different lengths
    outs = engine.generate_batch(PROMPTS[:3], 5, make_sampler(0))
    assert [len(ids) for ids, _ in outs] == [5, 5, 5]


def test_one_engine_serves_many_generate_calls_like_fresh_ones():
    # eval.samples reuses one batch-1 engine for every (prompt, seed): same ids as a fresh engine each.
    model = tiny_model("gpt")
    sampler = make_sampler(0.8, top_k=20)
    engine = Engine(model, 1)
    for seed, prompt in enumerate(PROMPTS):
        a = generate(model, prompt, 7, sampler, generator=torch.Generator().manual_seed(seed), engine=engine)[0]
        b = generate(model, prompt, 7, sampler, generator=torch.Generator().manual_seed(seed))[0]
        assert a == b
