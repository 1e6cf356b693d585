"""Optional dependencies of post-training, imported when first needed with an install hint."""

from __future__ import annotations

from types import ModuleType

from brlm.errors import BrlmError


def _need(module: str, what: str, extra: str = "hf") -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BrlmError(f"{what} needs the '{module.split('.')[0]}' package ({e}): pip install 'brlm[{extra}]'") from None


def transformers() -> ModuleType:
    return _need("transformers", "post-training (brlm finetune)")


def peft() -> ModuleType:
    return _need("peft", "LoRA / QLoRA (finetune.method=lora|qlora)")


def bitsandbytes() -> ModuleType:
    return _need("bitsandbytes", "QLoRA (finetune.method=qlora, 4-bit NF4 base)")
