"""--quantize int8 (brlm.infer.quantize): every linear becomes dynamic int8, logits stay close to
fp32, the loader records it, and `brlm eval intrinsic --quantize int8` scores the same windows."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from brlm.errors import BrlmError
from brlm.infer.engine import generate
from brlm.infer.load import load_model
from brlm.infer.quantize import is_quantized, linear_weight_bytes, quantize_model
from brlm.infer.sampling import make_sampler
from tests.conftest import run_cli
from tests.serving_helpers import make_run, train_tokenizer_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    return make_run(root, train_tokenizer_dir(root / "tok"), noise=0.1)


def test_int8_logits_stay_close_and_decode(run):
    fp32 = load_model(run)
    int8 = load_model(run, quantize="int8")
    assert int8.meta["quantize"] == "int8" and is_quantized(int8.model) and not is_quantized(fp32.model)
    assert not any(isinstance(m, nn.Linear) for m in int8.model.modules())
    assert linear_weight_bytes(int8.model) * 4 == linear_weight_bytes(fp32.model)
    idx = torch.tensor([fp32.tokenizer.encode("O ônibus da linha azul atrasou de novo por causa da obra.")])
    with torch.no_grad():
        a, _ = fp32.model(idx)
        b, _ = int8.model(idx)
    rel = (a - b).norm() / a.norm()
    assert rel < 0.1, rel  # n_embd 32: a coarse case for per-tensor activation scales
    p, q = a.log_softmax(-1), b.log_softmax(-1)
    assert (p.exp() * (p - q)).sum(-1).mean() < 0.01  # KL(fp32 || int8) per position, nats
    ids, info = generate(int8.model, idx[0].tolist(), 80, make_sampler(0.8), generator=torch.Generator().manual_seed(0))
    assert len(ids) == 80 and info["cache"] and info["reprefills"] >= 1  # the KV cache (fp32) works under int8


def test_bad_scheme_and_device():
    with pytest.raises(BrlmError, match="--quantize int4"):
        quantize_model(nn.Linear(4, 4), "int4")
    if torch.cuda.is_available():
        with pytest.raises(BrlmError, match="CPU only"):
            quantize_model(nn.Linear(4, 4).cuda())


def test_cli_eval_intrinsic_int8(tiny_run):
    """Same windows as eval.json, bits/byte within 1% of fp32 (the tiny demo run: gpt)."""
    out = tiny_run / "eval_int8.json"
    run_cli("eval", "intrinsic", str(tiny_run), "--quantize", "int8", check=True)
    q, f = json.loads(out.read_text()), json.loads((tiny_run / "eval.json").read_text())
    assert q["quantize"] == "int8" and q["windows_sha256"] == f["windows_sha256"] and q["tokens"] == f["tokens"]
    assert abs(q["bits_per_byte"] - f["bits_per_byte"]) / f["bits_per_byte"] < 0.01
    proc = run_cli("sample", str(tiny_run), "--quantize", "int8", "--prompt", "O Brasil", "--max-new-tokens", "5",
                   "--out", str(tiny_run / "samples_int8.json"), check=True)
    assert "--- seed" in proc.stdout
