"""int8 inference on CPU: every `nn.Linear` becomes a dynamically quantised int8 linear (weights
int8 per output channel, stored once; activations quantised per call from their own range).

    from brlm.infer.load import load_model
    lm = load_model("runs/demo", quantize="int8")          # the loader applies quantize_model
    brlm sample runs/demo --quantize int8                   # the same from the CLI (also chat, eval intrinsic)

Why PyTorch's own `quantize_dynamic` rather than torchao: measured here (torch 2.13 CPU, torchao
0.18, batch 1, one thread) torchao's int8 configs ran eagerly 2-4x *slower* than fp32 (they need
torch.compile to reach their kernels), while quantize_dynamic's fbgemm/onednn kernels were ~2.4x
faster than fp32 on 1024-wide layers. torch.ao.quantization is deprecated in favour of torchao,
so it is imported here only, with its deprecation warnings silenced; swapping the backend means
changing this one file.

Embeddings and norms stay fp32 (the KV cache too); a tied output head gets its own int8 copy.
A quantised model computes logits (`model(idx)`); the training path (`model(idx, targets)`, which
reads `lm_head.weight` directly) is not for it.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from brlm.errors import BrlmError

SCHEMES = ("int8",)


def quantize_model(model: nn.Module, scheme: str = "int8") -> nn.Module:
    """Quantise `model`'s nn.Linear layers in place (returns it, in eval mode). CPU only."""
    if scheme not in SCHEMES:
        raise BrlmError(f"--quantize {scheme}: unknown scheme; expected one of {', '.join(SCHEMES)}")
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise BrlmError(f"--quantize {scheme}: dynamic int8 runs on CPU only; the model is on {sorted(devices)} "
                        "(pass --device cpu or set train.device=cpu)")
    model.float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices, once per call
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # Per-channel weight scales: one outlier row no longer coarsens every other row's grid.
        quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes the linear layers' weights take (int8 packed weights count one byte per element)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
        elif type(m).__module__.startswith("torch.ao.nn.quantized") and hasattr(m, "weight") and callable(m.weight):
            total += m.weight().numel()
    return total
