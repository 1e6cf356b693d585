"""The post-training workflow's root config (`brlm finetune cpt|sft|dpo`, presets cpt / sft / dpo):
its own sections, so a post-training `config.yaml` holds only post-training keys.

    cfg = load_posttrain_config(preset="sft", scale="tiny", overrides=["lora.r=8"])

Sections: `finetune` (task, base model, method, sequence length, packing), `lora`, `quant`
(bitsandbytes NF4), `data` + `clean` (raw text for CPT, read like `brlm data prepare`), `pairs`
(instruction / chat / preference JSONL for SFT and DPO), `train` (the post-training loop), `eval`,
`sample` and `cost`. The track2 workflow (`brlm run track2`) has its own root, `Track2Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from brlm.config import base
from brlm.config.base import RootConfig, check, setting
from brlm.config.sections import CleanConfig, CostConfig, DataConfig, SampleConfig

TASKS = ("cpt", "sft", "dpo")
METHODS = ("full", "lora", "qlora")


@dataclass
class FinetuneConfig:
    task: str = setting("sft", "what to train: 'cpt' (raw text), 'sft' (instruction/chat pairs, response-only loss) or 'dpo' (preference pairs)")
    base: str = setting("", "base model: a brlm run folder, a local Hugging Face model folder or a hub id (needs the network)")
    checkpoint: str = setting("best", "checkpoint of a brlm run base: 'best', 'last' or a step")
    method: str = setting("qlora", "'full' (every weight), 'lora' (PEFT adapters) or 'qlora' (adapters over a 4-bit NF4 base)")
    seq_len: int = setting(2048, "tokens per training row; longer examples are truncated or skipped (finetune.too_long)")
    too_long: str = setting("truncate", "an example longer than seq_len: 'truncate' (keep the start) or 'skip' (both counted)")
    packing: bool = setting(True, "pack several examples into one row; attention never crosses example boundaries")
    fused_loss: bool = setting(True, "head + cross-entropy in chunks on the final hidden states (no (batch, seq, vocab) logits)")
    dtype: str = setting("auto", "weights/compute dtype: 'auto' (bf16 on GPUs that support it, else fp32), 'fp32', 'bf16' or 'fp16'")
    attn_implementation: str = setting("sdpa", "transformers attention: 'sdpa' or 'eager'")
    dpo_beta: float = setting(0.1, "DPO: strength of the KL constraint to the reference (the base with the adapter off)")
    trust_remote_code: bool = setting(False, "allow model code from the base folder (transformers trust_remote_code)")

    def __post_init__(self) -> None:
        check(self.task in TASKS, "finetune.task", self.task, "'cpt', 'sft' or 'dpo'")
        check(self.method in METHODS, "finetune.method", self.method, "'full', 'lora' or 'qlora'")
        check(self.seq_len >= 8, "finetune.seq_len", self.seq_len, "an integer >= 8")
        check(self.too_long in ("truncate", "skip"), "finetune.too_long", self.too_long, "'truncate' or 'skip'")
        check(self.dtype in ("auto", "fp32", "bf16", "fp16"), "finetune.dtype", self.dtype, "'auto', 'fp32', 'bf16' or 'fp16'")
        check(self.attn_implementation in ("sdpa", "eager"), "finetune.attn_implementation", self.attn_implementation,
              "'sdpa' or 'eager'")
        check(self.dpo_beta > 0, "finetune.dpo_beta", self.dpo_beta, "a number > 0")


@dataclass
class LoraConfig:
    r: int = setting(16, "LoRA rank")
    alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = setting(0.05, "dropout on the LoRA input")
    bias: str = setting("none", "train biases: 'none', 'all' or 'lora_only' (PEFT)")
    target_modules: str = setting("all-linear", "'all-linear' or a comma list of module names (q_proj,k_proj,...); an unknown name is an error listing the model's linear modules")

    def __post_init__(self) -> None:
        check(self.r >= 1, "lora.r", self.r, "an integer >= 1")
        check(self.alpha >= 1, "lora.alpha", self.alpha, "an integer >= 1")
        check(0 <= self.dropout < 1, "lora.dropout", self.dropout, "a number in [0, 1)")
        check(self.bias in ("none", "all", "lora_only"), "lora.bias", self.bias, "'none', 'all' or 'lora_only'")
        check(bool(self.target_modules.strip()), "lora.target_modules", self.target_modules, "'all-linear' or module names")


@dataclass
class QuantConfig:
    quant_type: str = setting("nf4", "4-bit data type of the frozen base (QLoRA): 'nf4' or 'fp4'")
    double_quant: bool = setting(True, "quantise the quantisation constants too (QLoRA's double quantisation)")
    compute_dtype: str = setting("auto", "dtype the 4-bit weights are dequantised to for matmuls: 'auto' (= finetune.dtype), 'bf16', 'fp16', 'fp32'")

    def __post_init__(self) -> None:
        check(self.quant_type in ("nf4", "fp4"), "quant.quant_type", self.quant_type, "'nf4' or 'fp4'")
        check(self.compute_dtype in ("auto", "bf16", "fp16", "fp32"), "quant.compute_dtype", self.compute_dtype,
              "'auto', 'bf16', 'fp16' or 'fp32'")


@dataclass
class PairsConfig:
    train: str = setting("", "SFT/DPO training file (JSONL): Canarim-style instruction/input/output, chat `messages`, or prompt/chosen/rejected; builtin:instructions, builtin:preferences")
    val: str = setting("", "validation file of the same kind ('' = split pairs.val_fraction off the training file by content hash)")
    format: str = setting("auto", "'auto' (from the first record), 'instruction', 'messages' or 'preference'")
    val_fraction: float = setting(0.1, "share of examples held out for validation when pairs.val is empty")
    max_train: int = setting(0, "use at most this many training examples (0 = all)")
    max_val: int = setting(0, "use at most this many validation examples (0 = all)")
    system: str = setting("", "system message put before every conversation ('' = none)")
    template: str = setting("auto", "prompt format: 'auto' (the tokenizer's chat template if it has one, else 'plain'), 'chat' or 'plain' (### Instrução / ### Resposta)")
    instruction_field: str = setting("instruction", "field with the instruction")
    input_field: str = setting("input", "field with the optional input / context")
    output_field: str = setting("output", "field with the reference response")
    messages_field: str = setting("messages", "field with a list of {role, content} messages")
    prompt_field: str = setting("prompt", "DPO: field with the prompt")
    chosen_field: str = setting("chosen", "DPO: field with the preferred response")
    rejected_field: str = setting("rejected", "DPO: field with the rejected response")

    def __post_init__(self) -> None:
        check(self.format in ("auto", "instruction", "messages", "preference"), "pairs.format", self.format,
              "'auto', 'instruction', 'messages' or 'preference'")
        check(0 < self.val_fraction < 1, "pairs.val_fraction", self.val_fraction, "a number in (0, 1)")
        check(self.max_train >= 0 and self.max_val >= 0, "pairs.max_train/max_val", (self.max_train, self.max_val), "integers >= 0")
        check(self.template in ("auto", "chat", "plain"), "pairs.template", self.template, "'auto', 'chat' or 'plain'")


@dataclass
class PostTrainConfig:
    epochs: float = setting(1.0, "passes over the training rows (ignored when train.max_steps > 0)")
    max_steps: int = setting(0, "optimizer steps (0 = from train.epochs)")
    batch_size: int = setting(2, "rows per forward pass in each process (step: batch_size x grad_accum x processes)")
    grad_accum: int = setting(8, "micro-batches whose gradients add up before each optimizer step")
    lr: float = setting(2e-4, "peak learning rate (AdamW)")
    min_lr: float = setting(0.0, "learning rate at the end of the cosine decay")
    warmup_steps: int = setting(100, "linear warmup steps")
    schedule: str = setting("cosine", "after warmup: 'cosine', 'linear' or 'constant'")
    weight_decay: float = setting(0.01, "AdamW weight decay on matrices")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.999, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the global gradient norm to this (0 = off)")
    gradient_checkpointing: bool = setting(True, "recompute each layer's activations in backward (less memory, ~30% more compute)")
    eval_interval: int = setting(200, "steps between validation losses")
    eval_batches: int = setting(0, "validation batches per periodic evaluation (0 = the whole validation set)")
    save_interval: int = setting(500, "steps between resume checkpoints")
    keep_checkpoints: int = setting(3, "recent checkpoints kept besides the best one")
    log_interval: int = setting(10, "steps between progress lines")
    seed: int = setting(42, "seed for adapters, data order and dropout")
    device: str = setting("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    parallel: str = setting("ddp", "with several processes (torchrun / accelerate launch): 'ddp' (replicated weights) or 'fsdp' (FSDP2, sharded)")
    threads: int = setting(0, "CPU threads for PyTorch (0 = PyTorch's default)")
    fit_check: bool = setting(True, "before loading the model, refuse a run `brlm estimate` says will not fit the device")
    memory_limit_gb: float = setting(0.0, "memory the fit check allows (0 = the GPU's memory, or this machine's RAM on CPU)")

    def __post_init__(self) -> None:
        check(self.epochs > 0, "train.epochs", self.epochs, "a number > 0")
        for key in ("batch_size", "grad_accum", "eval_interval", "save_interval", "log_interval", "keep_checkpoints"):
            check(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "an integer >= 1")
        check(self.max_steps >= 0, "train.max_steps", self.max_steps, "an integer >= 0")
        check(self.lr > 0, "train.lr", self.lr, "a number > 0")
        check(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, f"a number in [0, train.lr={self.lr}]")
        check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0")
        check(self.schedule in ("cosine", "linear", "constant"), "train.schedule", self.schedule, "'cosine', 'linear' or 'constant'")
        check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", (self.beta1, self.beta2), "numbers in [0, 1)")
        check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a number >= 0")
        check(self.eval_batches >= 0, "train.eval_batches", self.eval_batches, "an integer >= 0")
        check(self.parallel in ("ddp", "fsdp"), "train.parallel", self.parallel, "'ddp' or 'fsdp'")
        check(self.threads >= 0, "train.threads", self.threads, "an integer >= 0")
        ok = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        check(ok, "train.device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        check(self.memory_limit_gb >= 0, "train.memory_limit_gb", self.memory_limit_gb, "a number >= 0")


@dataclass
class PostEvalConfig:
    batch_size: int = setting(4, "rows per forward pass when scoring base and adapted model")
    max_rows: int = setting(0, "score at most this many validation rows, evenly spread (0 = all)")
    adapted_only: bool = setting(False, "skip scoring the base model (the table then has only the adapted column)")

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        check(self.max_rows >= 0, "eval.max_rows", self.max_rows, "an integer >= 0")


@dataclass
class PosttrainConfig(RootConfig):
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    train: PostTrainConfig = field(default_factory=PostTrainConfig)
    eval: PostEvalConfig = field(default_factory=PostEvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cost: CostConfig = field(default_factory=CostConfig)


@dataclass
class Track2Section:
    base: str = setting("", "an existing base (brlm run or Hugging Face folder) instead of training one from scratch ('' = train it)")
    base_preset: str = setting("demo", "pretraining preset of the from-scratch base")
    base_scale: str = setting("tiny", "its scale")
    base_set: str = setting("", "';'-separated --set overrides of the base's pretraining config (e.g. model.arch=llama)")
    cpt_preset: str = setting("cpt", "post-training preset of the CPT phase")
    sft_preset: str = setting("sft", "post-training preset of the SFT phase")
    dpo_preset: str = setting("dpo", "post-training preset of the DPO phase ('' = no DPO)")
    scale: str = setting("tiny", "scale of the three post-training presets")
    common_set: str = setting("", "';'-separated --set overrides applied to every post-training phase")
    cpt_set: str = setting("", "';'-separated --set overrides of the CPT phase")
    sft_set: str = setting("", "';'-separated --set overrides of the SFT phase")
    dpo_set: str = setting("", "';'-separated --set overrides of the DPO phase")
    cpt_source: str = setting("../shared/data/fakebr/news.jsonl.gz", "CPT corpus (any `brlm data prepare` source)")
    cpt_fallback: str = setting("builtin:demo", "CPT corpus when track2.cpt_source does not exist")
    sft_train: str = setting("../shared/data/canarim/sft_10k_train.jsonl", "SFT training pairs")
    sft_val: str = setting("../shared/data/canarim/sft_10k_val.jsonl", "SFT validation pairs")
    sft_fallback: str = setting("builtin:instructions", "SFT pairs when track2.sft_train does not exist (split by hash)")
    dpo_data: str = setting("builtin:preferences", "DPO preference pairs")
    device: str = setting("auto", "device for every phase: 'auto', 'cpu', 'cuda' or 'cuda:N'")
    threads: int = setting(0, "CPU threads for every phase (0 = PyTorch's default)")
    extrinsic_sets: str = setting(
        "../shared/data/canarim/extrinsic/seed123;../shared/data/canarim/extrinsic/seed456;../shared/data/canarim/extrinsic/seed789",
        "';'-separated extrinsic set folders the base and the adapted model answer at the end ('' = none; "
        "folders that do not exist are skipped, with the reason in the report)")
    extrinsic_limit: int = setting(10, "items per task and set for that table (0 = all 200; a subset keeps the run short)")

    def __post_init__(self) -> None:
        ok = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        check(ok, "track2.device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        check(self.threads >= 0, "track2.threads", self.threads, "an integer >= 0")
        check(self.extrinsic_limit >= 0, "track2.extrinsic_limit", self.extrinsic_limit, "an integer >= 0")


@dataclass
class Track2Config(RootConfig):
    track2: Track2Section = field(default_factory=Track2Section)


def split_overrides(text: str) -> list[str]:
    """'a.b=1; c.d=x' -> ['a.b=1', 'c.d=x'] (the *_set keys of Track2Config)."""
    return [part.strip() for part in text.split(";") if part.strip()]


def load_posttrain_config(
    preset: str | None = None,
    scale: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> PosttrainConfig:
    """defaults < preset < scale < --set, by the one rule of brlm.config.base.resolve."""
    return base.resolve(PosttrainConfig, preset, scale, config_file, overrides)
