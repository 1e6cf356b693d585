"""Typed run configuration: dataclass defaults < preset YAML < preset scale < --set overrides.

One dataclass per stage. Fields hold only strings, numbers and booleans, so a resolved config
is plain YAML (`config.yaml` in every run folder) and `brlm run --config runs/x/config.yaml`
repeats the run from that file alone. Unknown keys are errors that list the valid ones.

    cfg = load_config(preset="demo", scale="tiny", overrides=["train.lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from brlm.errors import ConfigError


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a help line (shown by `brlm run --list-keys`)."""
    return field(default=default, metadata={"help": help})


def _check(cond: bool, key: str, value: Any, expected: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


@dataclass
class DataConfig:
    source: str = _f("builtin:demo", "corpus: builtin:demo, a .jsonl/.jsonl.gz file, a .txt file or a folder of .txt files")
    text_field: str = _f("text", "JSON field that holds the document text")
    txt_mode: str = _f("blocks", "how a .txt file splits into documents: 'blocks' (blank-line separated) or 'lines'")
    nfkc: bool = _f(True, "apply Unicode NFKC normalisation")
    min_doc_chars: int = _f(200, "drop documents shorter than this after cleaning")
    dedup: bool = _f(True, "drop exact duplicates (same cleaned text)")
    val_fraction: float = _f(0.1, "share of documents in the validation split (by content hash)")
    split_salt: str = _f("brlm", "salt of the content hash that assigns splits; changing it reshuffles the split")
    max_docs: int = _f(0, "read at most this many documents (0 = all)")
    id_field: str = _f("id", "JSON field / CSV column with the document id (missing: file:line)")
    test_fraction: float = _f(0.0, "share of documents in the test split (by content hash; 0 = no test split)")
    exclude: str = _f("", "comma-separated files whose documents must not appear in any split (overlap guard)")
    hf_split: str = _f("train", "split read from a Hugging Face dataset (hf:NAME sources)")
    hf_config: str = _f("", "configuration name of a Hugging Face dataset (hf:NAME sources)")
    cache_dir: str = _f("", "cache folder for hf:NAME sources and `brlm data get` (empty: ~/.cache/brlm)")
    workers: int = _f(1, "worker processes that tokenize documents into shards (0 = one per CPU core)")

    def __post_init__(self) -> None:
        _check(self.txt_mode in ("blocks", "lines"), "data.txt_mode", self.txt_mode, "'blocks' or 'lines'")
        _check(self.min_doc_chars >= 1, "data.min_doc_chars", self.min_doc_chars, "an integer >= 1")
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "a number in (0, 1)")
        _check(self.max_docs >= 0, "data.max_docs", self.max_docs, "an integer >= 0")
        _check(0.0 <= self.test_fraction < 1.0 and self.val_fraction + self.test_fraction < 1.0, "data.test_fraction",
               self.test_fraction, f"a number in [0, 1 - data.val_fraction={self.val_fraction})")
        _check(self.workers >= 0, "data.workers", self.workers, "an integer >= 0")


CLEAN_PRESETS: dict[str, dict[str, Any]] = {
    # What we recommend for Transformers: keep case, digits and punctuation; only normalise
    # Unicode, drop invisible characters and collapse whitespace (brlm's behaviour before presets).
    "natural": {},
    # Article 1 (char-level v1-v3): everything lower-case, Unicode normalised, upper-case headers removed.
    "seed-v1": {"lowercase": True, "drop_upper_lines": True},
    # The v6 pipeline: line-quality filters, URLs/e-mails out, a punctuation whitelist, numbers
    # folded to 0, lower-case, an end-of-document marker.
    "seed-v6": {
        "lowercase": True,
        "digits_to_zero": True,
        "remove_urls": True,
        "remove_emails": True,
        "punct_filter": True,
        "min_line_chars": 40,
        "min_alpha_ratio": 0.4,
        "drop_upper_lines": True,
        "newlines": "single",
        "eod_marker": "<|endoftext|>",
    },
}


@dataclass
class CleanConfig:
    preset: str = _f("natural", "cleaning preset the other clean.* values started from: natural, seed-v1, seed-v6")
    strip_invisible: bool = _f(True, "remove BOM, zero-width characters, soft hyphens and control characters")
    remove_urls: bool = _f(False, "remove URLs (http://, https://, www.)")
    remove_emails: bool = _f(False, "remove e-mail addresses")
    pii: bool = _f(False, "replace CPF, CNPJ, phone numbers, e-mails and CEP by <CPF>, <CNPJ>, <TELEFONE>, <EMAIL>, <CEP>")
    lowercase: bool = _f(False, "lower-case everything")
    digits_to_zero: bool = _f(False, "replace every number of 2 or more digits by 0")
    punct_filter: bool = _f(False, "replace punctuation not in clean.punct_whitelist by a space")
    punct_whitelist: str = _f(".,;:!?'\"()-", "punctuation kept when clean.punct_filter is on (letters, digits, spaces always kept)")
    collapse_spaces: bool = _f(True, "collapse runs of spaces/tabs inside a line and trim lines")
    newlines: str = _f("blank", "newlines: 'keep', 'blank' (at most one blank line), 'single' (no blank lines), 'space' (one line)")
    min_line_chars: int = _f(0, "drop lines shorter than this (seeds: 40; 0 = off)")
    min_alpha_ratio: float = _f(0.0, "drop lines whose share of letters is below this (seeds: 0.4; 0 = off)")
    drop_upper_lines: bool = _f(False, "drop short all-upper-case lines (headers, metadata)")
    upper_line_max_chars: int = _f(80, "an all-upper-case line at most this long counts as a header")
    eod_marker: str = _f("", "text appended after each document on a line of its own (seeds: <|endoftext|>; empty = none)")
    near_dedup: bool = _f(False, "drop near-duplicates with MinHash LSH (needs `pip install 'brlm[dedup]'`)")
    near_dedup_threshold: float = _f(0.8, "estimated Jaccard similarity of 5-word shingles above which a document is a near-duplicate")
    near_dedup_num_perm: int = _f(128, "MinHash permutations (more: slower, more exact)")

    def __post_init__(self) -> None:
        _check(self.preset in CLEAN_PRESETS, "clean.preset", self.preset, f"one of {', '.join(CLEAN_PRESETS)}")
        _check(self.newlines in ("keep", "blank", "single", "space"), "clean.newlines", self.newlines,
               "'keep', 'blank', 'single' or 'space'")
        _check(self.min_line_chars >= 0, "clean.min_line_chars", self.min_line_chars, "an integer >= 0")
        _check(0.0 <= self.min_alpha_ratio <= 1.0, "clean.min_alpha_ratio", self.min_alpha_ratio, "a number in [0, 1]")
        _check(self.upper_line_max_chars >= 1, "clean.upper_line_max_chars", self.upper_line_max_chars, "an integer >= 1")
        _check(0.0 < self.near_dedup_threshold < 1.0, "clean.near_dedup_threshold", self.near_dedup_threshold, "a number in (0, 1)")
        _check(16 <= self.near_dedup_num_perm <= 1024, "clean.near_dedup_num_perm", self.near_dedup_num_perm, "an integer in [16, 1024]")


def clean_preset_overrides(name: str) -> list[str]:
    """`--clean NAME` as `--set clean.*=...` overrides (user --set values given later win)."""
    if name not in CLEAN_PRESETS:
        raise ConfigError(f"--clean {name!r}: unknown cleaning preset; available: {', '.join(CLEAN_PRESETS)}")
    defaults = {f.name: f.default for f in dataclasses.fields(CleanConfig)}
    values = {**defaults, **CLEAN_PRESETS[name], "preset": name}
    return [f"clean.{k}={v}" for k, v in values.items()]


@dataclass
class TokenizerConfig:
    kind: str = _f("spm", "tokenizer family: 'spm' (SentencePiece) or 'char' (one token per character)")
    model_type: str = _f("unigram", "SentencePiece algorithm: 'unigram' or 'bpe'")
    vocab_size: int = _f(2000, "vocabulary size, including special and byte-fallback pieces")
    byte_fallback: bool = _f(True, "encode unseen characters as UTF-8 byte pieces instead of <unk>")
    character_coverage: float = _f(0.9995, "share of characters covered by the vocabulary (rest: byte fallback)")
    input_sentence_size: int = _f(2_000_000, "maximum lines SentencePiece samples for training")
    shuffle_input_sentence: bool = _f(True, "shuffle the lines before SentencePiece samples input_sentence_size of them")
    user_defined_symbols: str = _f("", "comma-separated pieces always kept whole, e.g. <|endoftext|>,<CPF> (newline always is)")
    split_digits: bool = _f(True, "split numbers into single digits (spm)")
    max_piece_length: int = _f(16, "longest piece in characters (spm)")
    unk_id: int = _f(0, "id of <unk>")
    bos_id: int = _f(1, "id of <s> (begin of text)")
    eos_id: int = _f(2, "id of </s> (end of text; separates documents in shards)")
    pad_id: int = _f(-1, "id of <pad> (-1 = no padding token)")
    min_frequency: int = _f(1, "char tokenizer: characters seen fewer times in the train split become <unk>")
    allow_misaligned: bool = _f(False, "use a tokenizer whose cleaning config differs from the data's (recorded; normally an error)")

    def __post_init__(self) -> None:
        _check(self.kind in ("spm", "char"), "tokenizer.kind", self.kind, "'spm' or 'char'")
        _check(self.model_type in ("unigram", "bpe"), "tokenizer.model_type", self.model_type, "'unigram' or 'bpe'")
        # 256 byte pieces + 3 specials must fit when byte fallback is on.
        low = 300 if self.byte_fallback else 16
        _check(low <= self.vocab_size <= 1_000_000, "tokenizer.vocab_size", self.vocab_size, f"an integer in [{low}, 1000000]")
        _check(0.9 <= self.character_coverage <= 1.0, "tokenizer.character_coverage", self.character_coverage, "a number in [0.9, 1]")
        _check(self.input_sentence_size > 0, "tokenizer.input_sentence_size", self.input_sentence_size, "an integer > 0")
        _check(self.min_frequency >= 1, "tokenizer.min_frequency", self.min_frequency, "an integer >= 1")
        ids = [i for i in (self.unk_id, self.bos_id, self.eos_id, self.pad_id) if i >= 0]
        _check(self.unk_id >= 0 and len(set(ids)) == len(ids) and max(ids) < 4, "tokenizer.unk_id/bos_id/eos_id/pad_id",
               (self.unk_id, self.bos_id, self.eos_id, self.pad_id), "distinct ids in [0, 3] (-1 = none; unk required)")
        _check(self.bos_id >= 0 and self.eos_id >= 0, "tokenizer.bos_id/eos_id", (self.bos_id, self.eos_id),
               "ids >= 0 (brlm separates documents with eos)")
        _check(self.max_piece_length >= 1, "tokenizer.max_piece_length", self.max_piece_length, "an integer >= 1")


def swiglu_width(n_embd: int, multiple_of: int = 64) -> int:
    """SwiGLU width: 2/3 of 4·d (same parameters as a 4·d GELU MLP), rounded up to a multiple of 64."""
    return multiple_of * ((int(8 * n_embd / 3) + multiple_of - 1) // multiple_of)


@dataclass
class ModelConfig:
    arch: str = _f("gpt", "architecture name in brlm.models.registry: gpt, llama, moe, rnn")
    n_layer: int = _f(4, "number of Transformer blocks (rnn: recurrent layers)")
    n_head: int = _f(4, "attention (query) heads per block")
    n_kv_head: int = _f(0, "key/value heads for grouped-query attention (0 = n_head, i.e. plain multi-head)")
    n_embd: int = _f(128, "embedding (residual stream) width")
    block_size: int = _f(128, "context length in tokens")
    dropout: float = _f(0.1, "dropout probability in training")
    bias: bool = _f(True, "use biases in linear layers and LayerNorm (gpt)")
    mlp_hidden: int = _f(0, "hidden width of the MLP / SwiGLU (0 = 4*n_embd for gpt, a multiple of 64 near 8/3*n_embd for llama)")
    tie_embeddings: bool = _f(True, "share the input embedding and the output head")
    rope_base: float = _f(10000.0, "RoPE base frequency (llama, moe)")
    qk_norm: bool = _f(False, "RMS-normalise queries and keys per head before attention (llama, moe)")
    norm_eps: float = _f(1e-5, "epsilon of LayerNorm / RMSNorm")
    n_expert: int = _f(4, "experts in each MoE FFN (moe)")
    expert_top_k: int = _f(2, "experts each token is routed to (moe)")
    expert_hidden: int = _f(0, "hidden width of each expert (0 = mlp_hidden rule) (moe)")
    aux_loss_coef: float = _f(0.01, "weight of the MoE load-balancing loss (moe)")
    z_loss_coef: float = _f(0.001, "weight of the MoE router z-loss (moe)")
    rnn_cell: str = _f("lstm", "recurrent cell: 'lstm' or 'gru' (rnn)")
    rnn_hidden: int = _f(256, "hidden size of each recurrent layer (rnn)")
    rnn_layernorm: bool = _f(False, "LayerNorm between recurrent layers (rnn)")

    def __post_init__(self) -> None:
        for key in ("n_layer", "n_head", "n_embd", "block_size", "n_expert", "expert_top_k", "rnn_hidden"):
            value = getattr(self, key)
            _check(isinstance(value, int) and value >= 1, f"model.{key}", value, "an integer >= 1")
        for key in ("n_kv_head", "mlp_hidden", "expert_hidden"):
            _check(getattr(self, key) >= 0, f"model.{key}", getattr(self, key), "an integer >= 0")
        _check(self.n_embd % self.n_head == 0, "model.n_embd", self.n_embd, f"a multiple of model.n_head={self.n_head}")
        kv = self.n_kv_head or self.n_head
        _check(self.n_head % kv == 0, "model.n_kv_head", self.n_kv_head, f"a divisor of model.n_head={self.n_head}")
        _check(self.expert_top_k <= self.n_expert, "model.expert_top_k", self.expert_top_k, f"at most model.n_expert={self.n_expert}")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a number in [0, 1)")
        _check(self.rope_base > 0, "model.rope_base", self.rope_base, "a number > 0")
        _check(self.rnn_cell in ("lstm", "gru"), "model.rnn_cell", self.rnn_cell, "'lstm' or 'gru'")

    @property
    def ffn_hidden(self) -> int:
        """MLP width: mlp_hidden if set, else 4*n_embd (gpt) or the SwiGLU rule (llama, moe)."""
        if self.mlp_hidden:
            return self.mlp_hidden
        return 4 * self.n_embd if self.arch == "gpt" else swiglu_width(self.n_embd)

    @property
    def expert_ffn_hidden(self) -> int:
        return self.expert_hidden or self.ffn_hidden

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TrainConfig:
    batch_size: int = _f(16, "windows per forward pass in each process (optimizer step: batch_size x grad_accum x processes)")
    max_steps: int = _f(500, "optimizer steps")
    stride: int = _f(64, "step between consecutive training windows, in tokens (1 = every position)")
    lr: float = _f(1e-3, "peak learning rate (AdamW)")
    min_lr: float = _f(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _f(50, "linear warmup steps")
    weight_decay: float = _f(0.1, "AdamW weight decay (applied to matrices only)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")
    eval_interval: int = _f(50, "steps between validation-loss measurements")
    eval_windows: int = _f(64, "validation windows used for the periodic validation loss")
    log_interval: int = _f(10, "steps between progress lines")
    seed: int = _f(1337, "seed for weights, data order and dropout")
    device: str = _f("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    threads: int = _f(0, "CPU threads for PyTorch (0 = PyTorch's default)")
    grad_accum: int = _f(1, "micro-batches whose gradients add up before each optimizer step")
    schedule: str = _f("cosine", "learning-rate schedule after warmup: 'cosine', 'constant' or 'plateau' (reduce on validation plateau)")
    plateau_factor: float = _f(0.5, "plateau schedule: multiply the lr by this when validation stops improving")
    plateau_patience: int = _f(2, "plateau schedule: validations without improvement before the lr is reduced")
    early_stop_patience: int = _f(0, "stop after this many validations without improvement (0 = never)")
    save_interval: int = _f(0, "steps between resume checkpoints (0 = every eval_interval)")
    keep_checkpoints: int = _f(2, "recent checkpoints kept besides the best one; older ones are deleted")
    dtype: str = _f("auto", "'auto' (bf16 autocast on GPUs that support it and on CPUs with AMX, else fp32), 'fp32' or 'bf16'")
    compile: bool = _f(False, "torch.compile the model for training (slow first steps, faster after)")
    peak_tflops: float = _f(0.0, "hardware peak TFLOP/s per process, for the MFU figure (0 = GPU table or the measured CPU matmul peak)")

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_steps", "stride", "eval_interval", "eval_windows", "log_interval"):
            value = getattr(self, key)
            _check(isinstance(value, int) and value >= 1, f"train.{key}", value, "an integer >= 1")
        _check(self.lr > 0, "train.lr", self.lr, "a number > 0")
        _check(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, f"a number in [0, train.lr={self.lr}]")
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", (self.beta1, self.beta2), "numbers in [0, 1)")
        _check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a number >= 0")
        _check(self.threads >= 0, "train.threads", self.threads, "an integer >= 0")
        ok_device = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        _check(ok_device, "train.device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check(isinstance(self.grad_accum, int) and self.grad_accum >= 1, "train.grad_accum", self.grad_accum, "an integer >= 1")
        _check(self.schedule in ("cosine", "constant", "plateau"), "train.schedule", self.schedule, "'cosine', 'constant' or 'plateau'")
        _check(0 < self.plateau_factor < 1, "train.plateau_factor", self.plateau_factor, "a number in (0, 1)")
        _check(self.plateau_patience >= 1, "train.plateau_patience", self.plateau_patience, "an integer >= 1")
        _check(self.early_stop_patience >= 0, "train.early_stop_patience", self.early_stop_patience, "an integer >= 0")
        _check(self.save_interval >= 0, "train.save_interval", self.save_interval, "an integer >= 0")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        _check(self.dtype in ("auto", "fp32", "bf16"), "train.dtype", self.dtype, "'auto', 'fp32' or 'bf16'")
        _check(self.peak_tflops >= 0, "train.peak_tflops", self.peak_tflops, "a number >= 0")


@dataclass
class EvalConfig:
    stride: int = _f(0, "step between evaluation windows (0 = block_size, no overlap)")
    max_windows: int = _f(512, "evaluate at most this many validation windows, evenly spread")
    batch_size: int = _f(16, "windows per forward pass")
    category_field: str = _f("auto", "document field for the per-category breakdown ('auto': category, domain, categoria; '' = off)")
    windows_cache: str = _f("", "folder for the fixed window sets, keyed by shard hash, block and stride ('' = <run>/eval_windows)")

    def __post_init__(self) -> None:
        _check(self.stride >= 0, "eval.stride", self.stride, "an integer >= 0")
        _check(self.max_windows >= 1, "eval.max_windows", self.max_windows, "an integer >= 1")
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")


@dataclass
class SampleConfig:
    prompts: str = _f("builtin:prompts", "prompts: builtin:prompts or a text file with one prompt per line")
    max_new_tokens: int = _f(60, "tokens generated per prompt")
    temperature: float = _f(0.8, "softmax temperature (0 = greedy)")
    top_k: int = _f(50, "keep the k most likely tokens (0 = off)")
    top_p: float = _f(0.95, "keep the smallest set of tokens with this much probability (1 = off)")
    seed: int = _f(1234, "sampling seed")
    num_samples: int = _f(1, "samples per prompt (seeds seed, seed+1, ...)")
    repetition_penalty: float = _f(1.0, "divide logits of tokens already in the context by this (1 = off; CTRL)")
    stop: str = _f("", "stop strings separated by '|' ('\\n' for a newline); the completion ends before the first")
    use_cache: bool = _f(True, "decode with the model's KV cache / carried state when it has one")

    def __post_init__(self) -> None:
        _check(self.max_new_tokens >= 1, "sample.max_new_tokens", self.max_new_tokens, "an integer >= 1")
        _check(self.temperature >= 0, "sample.temperature", self.temperature, "a number >= 0")
        _check(self.top_k >= 0, "sample.top_k", self.top_k, "an integer >= 0")
        _check(0 < self.top_p <= 1, "sample.top_p", self.top_p, "a number in (0, 1]")
        _check(self.num_samples >= 1, "sample.num_samples", self.num_samples, "an integer >= 1")
        _check(self.repetition_penalty > 0, "sample.repetition_penalty", self.repetition_penalty, "a number > 0")


@dataclass
class GuardrailsConfig:
    prompts: str = _f("builtin:prompts", "prompts: builtin:prompts or a text file with one prompt per line")
    num_seeds: int = _f(5, "samples per prompt, seeds sample.seed, sample.seed+1, ...")
    max_new_tokens: int = _f(0, "tokens generated per sample (0 = sample.max_new_tokens)")
    max_byte_fallback: float = _f(0.03, "pass when at most this share of generated tokens are byte-fallback pieces")
    max_short_piece: float = _f(0.12, "pass when at most this share of generated pieces are alphabetic with <= 2 characters")
    short_piece_chars: int = _f(2, "an alphabetic piece this short or shorter counts as a short piece")

    def __post_init__(self) -> None:
        _check(self.num_seeds >= 1, "guardrails.num_seeds", self.num_seeds, "an integer >= 1")
        _check(self.max_new_tokens >= 0, "guardrails.max_new_tokens", self.max_new_tokens, "an integer >= 0")
        _check(0 <= self.max_byte_fallback <= 1, "guardrails.max_byte_fallback", self.max_byte_fallback, "a number in [0, 1]")
        _check(0 <= self.max_short_piece <= 1, "guardrails.max_short_piece", self.max_short_piece, "a number in [0, 1]")
        _check(self.short_piece_chars >= 1, "guardrails.short_piece_chars", self.short_piece_chars, "an integer >= 1")


@dataclass
class CostConfig:
    price_usd_per_hour: float = _f(0.0, "US$ per hour of the device used (0 = from the price table, brlm/resources/prices.yaml)")
    price_as: str = _f("", "price the run as if trained on this device of the table, e.g. rtx4090 ('' = the device used)")
    price_file: str = _f("", "a YAML price table that extends/overrides the built-in one ('' = built-in only)")
    brl_per_usd: float = _f(0.0, "BRL per USD, to also report costs in reais (0 = USD only)")
    assumed_mfu: float = _f(0.35, "MFU assumed when projecting the run's time onto another device (cost.price_as)")
    peak_flops_per_s: float = _f(0.0, "the device's peak FLOP/s for MFU (0 = GPU table, or measured once per machine on CPU)")

    def __post_init__(self) -> None:
        _check(self.price_usd_per_hour >= 0, "cost.price_usd_per_hour", self.price_usd_per_hour, "a number >= 0")
        _check(self.brl_per_usd >= 0, "cost.brl_per_usd", self.brl_per_usd, "a number >= 0")
        _check(0 < self.assumed_mfu <= 1, "cost.assumed_mfu", self.assumed_mfu, "a number in (0, 1]")
        _check(self.peak_flops_per_s >= 0, "cost.peak_flops_per_s", self.peak_flops_per_s, "a number >= 0")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "sample": SampleConfig,
    "cost": CostConfig,
    "clean": CleanConfig,
    "guardrails": GuardrailsConfig,
}


@dataclass
class RunConfig:
    preset: str = "custom"
    scale: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def section_hash(self, *names: str) -> str:
        """Content hash of some sections: the cache key of the stages that read only those."""
        blob = json.dumps({n: dataclasses.asdict(getattr(self, n)) for n in names}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Building configs from dictionaries, presets and overrides

def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check and convert one value to its field's type (YAML gives us ints for floats, etc.)."""
    name = typ if isinstance(typ, str) else typ.__name__
    if isinstance(value, str) and name in ("int", "float"):
        # YAML 1.1 reads '3e-4' (no dot) as a string; accept any number Python can parse.
        try:
            value = int(value) if name == "int" else float(value)
        except ValueError:
            pass
    if name == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}={value!r}: expected a number")
    if name == "str":
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}={value!r}: expected a string")
        return str(value)
    raise AssertionError(f"unsupported field type {typ!r} for {key}")


def _section_from_dict(section: str, values: dict[str, Any], origin: str) -> Any:
    cls = SECTIONS[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(f"{section}.{k}" for k in fields)
            raise ConfigError(f"{origin}: unknown key '{section}.{key}'; valid keys: {valid}")
        kwargs[key] = _coerce(f"{section}.{key}", value, fields[key].type)
    return cls(**kwargs)


def config_from_dict(d: dict[str, Any], origin: str = "config") -> RunConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(d).__name__}")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in ("preset", "scale"):
            kwargs[key] = str(value)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: section '{key}' must be a mapping, got {type(value).__name__}")
            kwargs[key] = _section_from_dict(key, value, origin)
        else:
            raise ConfigError(f"{origin}: unknown section '{key}'; valid: preset, scale, {', '.join(SECTIONS)}")
    return RunConfig(**kwargs)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[str, str, Any]:
    """'train.lr=3e-4' -> ('train', 'lr', '3e-4' parsed as YAML, i.e. 0.0003)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"--set {text!r}: unknown key '{key}'; valid keys: {', '.join(valid_keys())}")
    section, name = parts
    names = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    if name not in names:
        raise ConfigError(f"--set {text!r}: unknown key '{key}'; valid keys: {', '.join(f'{section}.{n}' for n in names)}")
    typ = names[name].type
    # Strings stay verbatim (YAML would turn 'yes' into True); other types parse as YAML scalars.
    if (typ if isinstance(typ, str) else typ.__name__) == "str":
        return section, name, raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return section, name, value


def list_presets() -> list[str]:
    root = resources.files("brlm") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    path = resources.files("brlm") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset '{name}' does not exist; available: {', '.join(list_presets())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "config" not in data:
        raise ConfigError(f"preset file {name}.yaml: expected keys 'config' and optionally 'scales'")
    return data


def preset_sections(name: str, scale: str | None) -> tuple[dict[str, Any], str]:
    """The preset's config dict with its scale applied, and the scale used."""
    data = read_preset(name)
    scales = data.get("scales") or {}
    scale = scale or data.get("default_scale") or "default"
    if scale != "default" and scale not in scales:
        raise ConfigError(f"--scale {scale!r}: preset '{name}' has scales {', '.join(sorted(scales)) or '(none)'}")
    merged = _deep_merge(data["config"] or {}, scales.get(scale) or {})
    return merged, scale


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {p}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "parse error"
        raise ConfigError(f"--config {p}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of sections")
    return data


def load_config(
    preset: str | None = None,
    scale: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Resolve a config: defaults < preset (< its scale) or a config file < --set overrides."""
    if config_file is not None:
        base = read_config_file(config_file)
        origin = f"--config {config_file}"
        # A config file may also name a preset; the file's own sections take precedence.
        if scale is not None:
            base["scale"] = scale
    elif preset is not None:
        sections, used_scale = preset_sections(preset, scale)
        base = {"preset": preset, "scale": used_scale, **sections}
        origin = f"preset {preset} (scale {used_scale})"
    else:
        base, origin = {}, "defaults"
    merged: dict[str, Any] = dict(base)
    for text in overrides or []:
        section, name, value = parse_override(text)
        merged.setdefault(section, {})
        merged[section] = {**merged[section], name: value}
        origin = f"{origin} + --set"
    return config_from_dict(merged, origin)


def field_help() -> list[tuple[str, str, Any]]:
    """(key, help, default) for every config key, for `--list-keys`."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{section}.{f.name}", f.metadata.get("help", ""), f.default))
    return rows
