"""load_model(..., adapter=DIR): a PEFT LoRA adapter merged into a Hugging Face folder or into a
run (through its in-memory Hugging Face form) gives the PEFT model's logits; chat mode follows."""

from __future__ import annotations

import pytest
import torch

from brlm.errors import BrlmError
from brlm.infer.chat import detect_mode
from brlm.infer.load import load_model
from tests.serving_helpers import make_run, train_tokenizer_dir

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(run, its HF export, a LoRA adapter trained on nothing but with non-zero B)."""
    from brlm.infer.export import export_run

    root = tmp_path_factory.mktemp("adapter")
    run = make_run(root, train_tokenizer_dir(root / "tok"), noise=0.1)
    hf_dir = root / "hf"
    export_run(run, hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    lora.save_pretrained(root / "adapter")
    return run, hf_dir, root / "adapter", lora.eval()


def test_adapter_merged_gives_peft_logits(base):
    run, hf_dir, adapter, lora = base
    idx = torch.tensor([[5, 17, 40, 99, 3, 250, 8]])
    with torch.no_grad():
        want = lora(input_ids=idx).logits
        plain = load_model(hf_dir).model(idx)[0]
        assert (want - plain).abs().max() > 1e-3  # the adapter changes the function
        for source in (hf_dir, run):
            lm = load_model(source, adapter=adapter)
            assert lm.meta["adapter"] == str(adapter.resolve()) and detect_mode(lm) == "chat"
            torch.testing.assert_close(lm.model(idx)[0], want, atol=1e-4, rtol=1e-4)
        q = load_model(run, adapter=adapter, quantize="int8")  # merged first, then quantised
        assert ((q.model(idx)[0] - want).norm() / want.norm()) < 0.1


def test_bad_adapter_folder(base, tmp_path):
    run, hf_dir, _, _ = base
    with pytest.raises(BrlmError, match="adapter_config.json missing"):
        load_model(run, adapter=hf_dir)


def test_extrinsic_run_compares_a_base_with_base_plus_adapter(base, tmp_path):
    """`brlm eval extrinsic run --model BASE --model BASE --adapter DIR`: the second side is the base
    with the adapter (its own name and generation key), scored on the same items as the base."""
    import json

    from tests.conftest import run_cli

    _run, hf_dir, adapter, _ = base
    sets = tmp_path / "seed1"
    sets.mkdir()
    for task, ref in (("qa", "Brasília"), ("summarization", "Um resumo curto."), ("rewriting", "Um texto reescrito.")):
        rows = [{"task": task, "instruction": f"Tarefa {task} número {i}.", "input": "O texto de entrada.",
                 "reference": ref, "hash": f"{task}-{i}"} for i in range(2)]
        (sets / f"{task}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    run_cli("eval", "extrinsic", "run", "--model", str(hf_dir), "--model", str(hf_dir), "--adapter", str(adapter),
            "--sets", str(sets), "--out", str(out), "--max-new-tokens-qa", "4", "--max-new-tokens-long", "4",
            "--n-resamples", "200", check=True)
    result = json.loads((out / "extrinsic.json").read_text(encoding="utf-8"))
    base_info, adapted = result["models"]
    assert base_info["name"] == "hf" and adapted["name"] == "adapter"
    assert "adapter:" in str(adapted["checkpoint"]) and base_info["gen_key"] != adapted["gen_key"]
    rows = [json.loads(line) for line in (out / "extrinsic_details.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["model"] for r in rows) == ["adapter"] * 6 + ["hf"] * 6
