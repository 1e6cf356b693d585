"""The model side of post-training (brlm.posttrain.model, .loss): PEFT LoRA targets, bitsandbytes
NF4 + double quantisation run for real on this CPU, the fused loss on the HF model, adapters that
refuse a different base, merge, and the one-line errors for bad bases."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from brlm.config.base import resolve
from brlm.config.posttrain import PosttrainConfig
from brlm.errors import BrlmError, ConfigError
from tests.posttrain_helpers import make_hf_base

transformers = pytest.importorskip("transformers", reason="post-training needs transformers (pip install 'brlm[hf]')")
peft = pytest.importorskip("peft", reason="LoRA needs peft (pip install 'brlm[hf]')")


def cfg_with(*overrides: str) -> PosttrainConfig:
    return resolve(PosttrainConfig, overrides=["train.device=cpu", "lora.r=4", "lora.alpha=8", "lora.dropout=0", *overrides])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_hf_base(tmp_path_factory.mktemp("pt") / "base")


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    return make_hf_base(tmp_path_factory.mktemp("pt") / "other", seed=1)


def batch(vocab: int, b: int = 2, t: int = 24):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (b, t), generator=g)
    targets = torch.cat([ids[:, 1:], torch.full((b, 1), -100)], dim=1)
    targets[:, :5] = -100  # a prompt part without targets
    return ids, targets, torch.arange(t).expand(b, -1)


def test_lora_all_linear_and_unknown_targets(base):
    from brlm.posttrain.model import build_model, linear_module_names

    model = build_model(base, cfg_with("finetune.method=lora"), torch.device("cpu"))
    wrapped = {n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    names = linear_module_names(model.get_base_model())
    assert set(names) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert wrapped == set(names)  # all-linear: every linear layer but the head
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    with pytest.raises(ConfigError, match=r"qkv_proj not in this model; its linear modules are down_proj, gate_proj, k_proj"):
        build_model(base, cfg_with("finetune.method=lora", "lora.target_modules=q_proj,qkv_proj"), torch.device("cpu"))


def test_qlora_is_nf4_with_double_quant_and_trains_like_its_dequantised_twin(base):
    """The real bitsandbytes path on this CPU: Linear4bit NF4 weights with nested (double)
    quantisation; the LoRA gradients equal those of the same model with the NF4 weights
    dequantised into plain Linear layers; an eval pass does not repack the weights."""
    import bitsandbytes as bnb

    from brlm.posttrain.data import check_isolation
    from brlm.posttrain.loss import CausalLMLoss
    from brlm.posttrain.model import build_model

    cfg = cfg_with("finetune.method=qlora", "train.gradient_checkpointing=true")
    model = build_model(base, cfg, torch.device("cpu"))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7
    qs = layers[0].weight.quant_state
    assert qs.quant_type == "nf4" and qs.nested and layers[0].weight.dtype == torch.uint8
    check_isolation(model.get_base_model(), 400, torch.device("cpu"))  # an eval pass without gradients
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)

    ids, targets, pos = batch(model.get_base_model().config.vocab_size)
    model.train()
    total, n = CausalLMLoss(model)(ids, targets, pos)
    (total / n).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    twin = build_model(base, cfg_with("finetune.method=lora"), torch.device("cpu"))
    with torch.no_grad():
        plain = dict(twin.named_modules())
        for name, q in model.named_modules():
            if isinstance(q, bnb.nn.Linear4bit):
                plain[name].weight.copy_(bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state))
        for (k, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
            if "lora_" in k:
                b.copy_(a)
    twin.train()
    total2, n2 = CausalLMLoss(twin)(ids, targets, pos)
    (total2 / n2).backward()
    assert torch.allclose(total / n, total2 / n2, atol=1e-5)
    for k, p in twin.named_parameters():
        if p.requires_grad:
            assert torch.allclose(grads[k], p.grad, atol=1e-5, rtol=1e-3), k


def test_fused_loss_matches_the_models_own_loss_and_gradients(base):
    """linear_cross_entropy on the backbone's hidden states = transformers' loss over full logits."""
    from brlm.posttrain.loss import CausalLMLoss
    from brlm.posttrain.model import build_model

    model = build_model(base, cfg_with("finetune.method=lora", "train.gradient_checkpointing=false"), torch.device("cpu"))
    fn = CausalLMLoss(model)
    assert fn.fused
    ids, targets, pos = batch(model.get_base_model().config.vocab_size)
    total, n = fn(ids, targets, pos)
    (total / n).backward()
    ours = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    labels = torch.cat([torch.full((2, 1), -100), targets[:, :-1]], dim=1)  # HF shifts labels itself
    theirs = model(input_ids=ids, labels=labels, position_ids=pos, use_cache=False).loss
    theirs.backward()
    assert torch.allclose(total / n, theirs, atol=1e-5)
    for k, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(ours[k], p.grad, atol=1e-6, rtol=1e-4), k
    # DPO log-probabilities: the per-row sums of the same thing.
    logps = fn.sequence_logps(ids, targets, pos)
    assert torch.allclose(-logps.sum() / n, total / n, atol=1e-5)


def test_fused_loss_falls_back_for_a_lora_head(base):
    from brlm.posttrain.loss import CausalLMLoss
    from brlm.posttrain.model import build_model

    model = build_model(base, cfg_with("finetune.method=lora", "lora.target_modules=q_proj,lm_head"), torch.device("cpu"))
    fn = CausalLMLoss(model)
    assert not fn.fused and "not a plain Linear" in fn.reason


def test_bad_bases_are_one_line_errors(base, tmp_path):
    from brlm.posttrain.model import check_base_folder, resolve_base

    no_weights = tmp_path / "no_weights"
    shutil.copytree(base, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(BrlmError, match="no weights") as e:
        check_base_folder(no_weights)
    assert "\n" not in str(e.value)
    no_tok = tmp_path / "no_tok"
    shutil.copytree(base, no_tok)
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(BrlmError, match="no tokenizer"):
        check_base_folder(no_tok)
    with pytest.raises(BrlmError, match="folder not found"):
        resolve_base(str(tmp_path / "nope"))


def test_hub_id_offline_names_the_id_and_the_way_out(monkeypatch, tmp_path):
    from brlm.posttrain.model import resolve_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BrlmError) as e:
        resolve_base("meta-llama/Llama-3.1-8B")
    msg = str(e.value)
    assert "meta-llama/Llama-3.1-8B" in msg and "--base DIR" in msg and "\n" not in msg


def test_adapter_refuses_another_base_and_merge_keeps_the_logits(base, other_base, tmp_path):
    from brlm.posttrain.model import (
        attach_adapter,
        base_fingerprint,
        build_model,
        load_base,
        merge_adapter,
        save_trained,
    )

    cfg = cfg_with("finetune.method=lora")
    model = build_model(base, cfg, torch.device("cpu"))
    with torch.no_grad():  # a non-zero update (LoRA's B starts at 0)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    tok = transformers.AutoTokenizer.from_pretrained(str(base))
    adapter = tmp_path / "adapter"
    save_trained(model, adapter, tok, {"base": str(base), "base_fingerprint": base_fingerprint(model)})
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "brlm_adapter.json").is_file()

    with pytest.raises(BrlmError, match="trained on a different base") as e:
        attach_adapter(load_base(other_base, cfg, torch.device("cpu")), adapter, str(other_base))
    assert "embedding_sha256" in str(e.value)

    ids = torch.randint(3, 400, (1, 20), generator=torch.Generator().manual_seed(5))
    adapted = attach_adapter(load_base(base, cfg, torch.device("cpu")), adapter, str(base)).eval()
    merged_dir = tmp_path / "merged"
    merge_adapter(base, adapter, merged_dir, cfg)
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        a, m = adapted(input_ids=ids).logits, merged(input_ids=ids).logits
        plain = load_base(base, cfg, torch.device("cpu")).eval()(input_ids=ids).logits
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(a, plain, atol=1e-3)  # the adapter does change the model
    assert json.loads((merged_dir / "merge.json").read_text())["adapter"] == str(adapter)
    assert (merged_dir / "tokenizer.json").is_file()
