"""Memory estimates: the seeds' worked figures reproduced term by term, then the fuller estimate."""

from __future__ import annotations

import pytest

from brlm.compute.memory import (
    GB,
    SEEDS_TERMS,
    estimate_memory,
    lora_params,
    lora_trainable_params,
    parse_size,
    resolve_model,
)
from brlm.errors import BrlmError


def test_seeds_7b_full_finetune_fp32_adam_is_112_gb():
    est = estimate_memory(resolve_model("7b"), method="full", dtype="fp32", optimizer="adamw", terms=SEEDS_TERMS)
    gb = {k: v / GB for k, v in est.terms.items() if v}
    assert gb == {"weights": 28.0, "grads": 28.0, "optimizer": 56.0}
    assert est.total_gb == 112.0
    assert est.total_gb - 24 == 88.0  # the seeds' deficit on a 24 GB card


def test_seeds_8b_lora_r64_is_16_3_gb():
    # Seeds: base 8e9 × 2 B (fp16) = 16 GB; ≈16e6 LoRA params × 4 B = 64 MB; grads 64 MB; Adam 128 MB.
    est = estimate_memory(resolve_model("8b"), method="lora", dtype="fp16", lora_params_override=16_000_000, terms=SEEDS_TERMS)
    assert est.terms["weights"] == 16e9
    assert est.terms["adapters"] == est.terms["grads"] == 64e6
    assert est.terms["optimizer"] == 128e6
    assert round(est.total_gb, 1) == 16.3


def test_seeds_70b_qlora_is_43_4_gb():
    # Seeds: 70e9 × 0.5 B = 35 GB; adapters 200 MB; grads 200 MB; overhead 8 GB (no optimizer term).
    est = estimate_memory(resolve_model("70b"), method="qlora", lora_params_override=50_000_000,
                          terms=("weights", "adapters", "grads"), overhead_gb=8)
    assert est.terms["weights"] == 35e9
    assert est.terms["adapters"] == est.terms["grads"] == 200e6
    assert est.total_gb == pytest.approx(43.4)


def test_seeds_lora_parameter_count():
    assert lora_params(4096, 4096, 8) == 65_536
    assert 4096 * 4096 == 16_777_216  # ≈ 16.8 M for the full update
    assert 4096 * 4096 // lora_params(4096, 4096, 8) == 256


def test_known_architectures_have_published_sizes():
    assert resolve_model("llama-3.1-8b").n_params == 8_030_261_248
    assert resolve_model("llama-2-7b").n_params == 6_738_415_616
    assert resolve_model("llama-3.1-70b").n_params == 70_553_706_496
    assert resolve_model("gpt2").n_params == 124_439_808
    cfg = resolve_model("llama-3.1-8b").cfg
    # q (4096->4096) and v (4096->1024) at r=64 in 32 layers
    assert lora_trainable_params(cfg, 64, "qv") == 32 * 64 * ((4096 + 4096) + (4096 + 1024))


def test_fuller_estimate_adds_what_the_seeds_left_out():
    m = resolve_model("llama-3.1-8b")
    seeds = estimate_memory(m, method="qlora", dtype="bf16", lora_rank=64, lora_targets="all", terms=SEEDS_TERMS)
    full = estimate_memory(m, method="qlora", dtype="bf16", lora_rank=64, lora_targets="all", seq_len=1024)
    for term in ("activations", "runtime", "quant_constants"):
        assert full.terms[term] > 0
    assert full.total_bytes > seeds.total_bytes
    dq = estimate_memory(m, method="qlora", double_quant=True).terms["quant_constants"]
    no_dq = estimate_memory(m, method="qlora", double_quant=False).terms["quant_constants"]
    assert no_dq / dq == pytest.approx(0.5 / 0.127, rel=0.01)  # 0.5 vs 0.127 bit per parameter (QLoRA §3)


def test_checkpointing_microbatch_and_optimizers_change_the_right_terms():
    m = resolve_model("llama-3.1-8b")
    a1 = estimate_memory(m, dtype="bf16", micro_batch=1, seq_len=512).terms["activations"]
    a4 = estimate_memory(m, dtype="bf16", micro_batch=4, seq_len=512).terms["activations"]
    ck = estimate_memory(m, dtype="bf16", micro_batch=4, seq_len=512, checkpointing=True).terms["activations"]
    assert a4 == pytest.approx(4 * a1) and ck < a4 / 2
    opt = {o: estimate_memory(m, optimizer=o).terms["optimizer"] for o in ("adamw", "adam8bit", "sgd")}
    assert opt["adamw"] == 4 * opt["adam8bit"] and opt["sgd"] == 0
    inf = estimate_memory(m, method="inference", dtype="bf16", seq_len=8192)
    assert inf.terms["kv_cache"] == 2 * 32 * 8 * 128 * 8192 * 2 and inf.terms["grads"] == 0


def test_presets_and_bad_input():
    tiny = resolve_model("demo:tiny")
    assert tiny.cfg is not None and tiny.cfg.n_embd == 32
    assert parse_size("125m") == 125_000_000 and parse_size("7B") == 7_000_000_000
    for bad in ("-7b", "sete bilhões", "0"):
        with pytest.raises(BrlmError):
            resolve_model(bad)
    with pytest.raises(BrlmError, match="--dtype"):
        estimate_memory(tiny, dtype="fp8")
    with pytest.raises(BrlmError, match="LoRA parameters need an architecture"):
        estimate_memory(resolve_model("7b"), method="lora")


def _saved_bytes(model, x, y) -> int:
    """Bytes of the tensors autograd saves for backward (parameters excluded), by storage."""
    return _saved_by(lambda: model(x, y), {p.untyped_storage().data_ptr() for p in model.parameters()})


def _saved_by(forward, exclude: set[int]) -> int:
    """Bytes of the tensors autograd saves while `forward()` runs, by storage, storages in `exclude` left out."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in exclude:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values())


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_activation_formula_matches_what_autograd_saves(dropout):
    import torch

    from brlm.compute.memory import activation_elements_per_token
    from brlm.config import ModelConfig
    from brlm.models.gpt import GPT
    from brlm.models.loss import default_chunk_rows

    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, dropout=dropout)
    model = GPT(cfg, 300).train()
    B, T = 4, 32
    x = torch.randint(0, 300, (B, T))
    measured = _saved_bytes(model, x, x)
    a = activation_elements_per_token(cfg, 300, T, "math" if dropout > 0 else "flash", fused_loss=True)  # CPU: math iff dropout
    # The fused loss saves d(loss)/d(hidden) and the head weight's gradient; its chunk of logits is
    # transient, not saved.
    chunk = 4 * default_chunk_rows(300) * 300
    predicted = B * T * (a["layers"] * 4 + a["head"] * 4 + a["mask_bytes"]) + a["head_fixed_bytes"] - chunk
    assert predicted == pytest.approx(measured, rel=0.10)
    # An HF-style loss keeps the logits (alive in the training loop, not saved by autograd), the
    # log-softmax (saved) and their gradient (allocated in backward): 3·V per token instead.
    unfused = activation_elements_per_token(cfg, 300, T, "flash", fused_loss=False)
    assert unfused["head"] - a["head"] == 3 * 300 and unfused["head_fixed_bytes"] == 0


def test_fused_head_memory_counts_the_head_gradient_only_when_trained():
    m = resolve_model("demo:tiny")
    assert m.fused_loss and not resolve_model("llama-3.1-8b").fused_loss
    full = estimate_memory(m, method="full", dtype="fp32").terms["activations"]
    lora = estimate_memory(m, method="lora", dtype="fp32").terms["activations"]
    from brlm.compute.memory import lora_activation_per_token

    adapters = lora_activation_per_token(m.cfg, 8, "qv", 0.0)[0] * m.cfg.n_layer * m.cfg.block_size * 4  # A outputs
    assert full - (lora - adapters) == 4 * m.vocab_size * m.cfg.n_embd  # the frozen head has no fp32 weight gradient


def _tiny_hf_llama(folder, vocab=320):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method,dropout", [("lora", 0.0), ("lora", 0.1), ("qlora", 0.0)])
def test_posttrain_estimate_matches_what_a_peft_llama_saves(tmp_path, method, dropout):
    """The post-training estimate (brlm.posttrain.fit -> estimate_memory) against a tiny Hugging Face
    Llama built as brlm trains it: parameter bytes as stored (QLoRA: NF4 + constants, the rest fp32)
    and the tensors autograd saves in one forward (LoRA A outputs, dropped inputs and masks included)."""
    pytest.importorskip("transformers", reason="post-training needs transformers")
    pytest.importorskip("peft", reason="LoRA needs peft")
    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    import torch

    from brlm.config.base import resolve
    from brlm.config.posttrain import PosttrainConfig
    from brlm.models.loss import default_chunk_rows
    from brlm.posttrain.fit import estimate, model_spec
    from brlm.posttrain.loss import CausalLMLoss
    from brlm.posttrain.model import build_model

    folder = _tiny_hf_llama(tmp_path / "base")
    B, T, V = 2, 64, 320
    cfg = resolve(PosttrainConfig, overrides=[f"finetune.base={folder}", f"finetune.method={method}", f"finetune.seq_len={T}",
                                              "train.gradient_checkpointing=false", "train.device=cpu", "lora.r=8",
                                              f"lora.dropout={dropout}", f"train.batch_size={B}"])
    torch.manual_seed(0)
    model = build_model(folder, cfg, torch.device("cpu"))
    est = estimate(model_spec(folder, T, True), cfg, torch.device("cpu"))

    stored, trainable = 0, 0
    fixed = set()
    for p in model.parameters():
        fixed.add(p.untyped_storage().data_ptr())
        stored += p.untyped_storage().nbytes() * (not p.requires_grad)
        trainable += p.numel() * p.requires_grad
        qs = getattr(p, "quant_state", None)
        for t in (getattr(qs, "absmax", None), getattr(getattr(qs, "state2", None), "absmax", None)):
            if isinstance(t, torch.Tensor):
                stored += t.untyped_storage().nbytes()
    assert est.trainable_params == trainable
    assert est.terms["weights"] + est.terms["quant_constants"] == pytest.approx(stored, rel=0.02)

    ids = torch.randint(0, V, (B, T))
    pos = torch.arange(T).expand(B, -1)
    saved = _saved_by(lambda: CausalLMLoss(model, True)(ids, ids, pos), fixed)
    chunk = 4 * default_chunk_rows(V) * V  # the fused loss's chunk of logits is transient, not saved
    assert est.terms["activations"] - chunk == pytest.approx(saved, rel=0.10)
    assert est.terms["allocator"] == pytest.approx(0.5 * est.terms["activations"])


@pytest.mark.parametrize("arch,dtype,dropout", [("gpt", "fp32", 0.0), ("llama", "fp32", 0.1), ("gpt", "bf16", 0.0),
                                                ("llama", "bf16", 0.0)])
def test_plain_attention_memory_matches_what_autograd_saves(arch, dtype, dropout):
    """What the plain attention form (q·kᵀ, softmax, ·v) saves beyond PyTorch's fused kernel
    (its math path with dropout), as estimate_memory counts it, against the tensors autograd saves
    in the same model run both ways (bf16: under autocast, as the trainer runs it). Not bf16 with
    dropout: PyTorch's math path then runs in fp32 under CPU autocast, which the "math" count
    (in the compute dtype) does not model."""
    import torch

    from brlm.compute.memory import spec_from_config
    from brlm.config import ModelConfig
    from brlm.models import attention
    from brlm.models.registry import build_model

    cfg = ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=64, block_size=32, dropout=dropout)
    model = build_model(cfg, 300).train()
    B, T = 4, 32
    x = torch.randint(0, 300, (B, T))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    key = attention._key(T, cfg.head_dim, torch.float32 if dtype == "fp32" else torch.bfloat16, "cpu")

    def saved(form):
        attention._plans[key] = form
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            return _saved_by(lambda: model(x, x), params)

    spec = spec_from_config("t", cfg, 300)
    reference = "math" if dropout > 0 else "flash"
    est = {impl: estimate_memory(spec, method="full", dtype=dtype, micro_batch=B, seq_len=T, attention_impl=impl,
                                 device="cpu", terms=("activations",)).total_bytes for impl in ("plain", reference)}
    fused = saved("fused")
    measured = saved("plain") - fused
    predicted = est["plain"] - est[reference]
    # With dropout in fp32 the plain form saves what the math path does (0 difference).
    assert predicted == pytest.approx(measured, rel=0.10, abs=0.01 * fused)
    if dropout == 0:  # the T×T probabilities the fused kernel does not keep (it keeps a log-sum-exp per row)
        assert measured >= 0.9 * cfg.n_layer * B * cfg.n_head * T * T * (2 if dtype == "bf16" else 4)


def test_auto_attention_counts_the_form_training_measured_on_this_machine(tmp_path, monkeypatch):
    import torch

    from brlm.models import attention

    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(attention, "_time_pair", lambda *a: {"fused": 10.0, "plain": 5.0})
    spec = resolve_model("demo:tiny")
    cfg = spec.cfg
    kw = dict(method="full", dtype="fp32", micro_batch=4, device="cpu")
    before = estimate_memory(spec, **kw)
    assert before.settings["attention_impl"] == ("math" if cfg.dropout > 0 else "flash")
    assert any("no measured plan" in n for n in before.assumptions)
    # Training measures this shape (here: the plain form wins) and caches it; the estimate follows.
    rec = attention.choose_attention_plan(4, cfg.n_head, cfg.block_size, cfg.head_dim, cfg.n_layer, torch.float32)
    assert rec["form"] == "plain"
    after = estimate_memory(spec, **kw)
    assert after.settings["attention_impl"] == "plain"
    assert after.terms["activations"] == estimate_memory(spec, **{**kw, "attention_impl": "plain"}).terms["activations"]
    assert after.terms["activations"] > estimate_memory(spec, **{**kw, "attention_impl": "flash"}).terms["activations"]
    # Another dtype, batch or the GPU: nothing measured, or not the CPU's plan.
    assert estimate_memory(spec, **{**kw, "dtype": "bf16"}).settings["attention_impl"] != "plain"
    assert estimate_memory(spec, **{**kw, "device": "cuda"}).settings["attention_impl"] == "flash"
    with pytest.raises(BrlmError, match="--attention"):
        estimate_memory(spec, **{**kw, "attention_impl": "sdpa"})
