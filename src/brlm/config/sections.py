"""The library's config sections: one dataclass per concern, a help line on every field.

Fields hold only strings, numbers and booleans, so any workflow's resolved config is plain YAML.
`__post_init__` checks each value and names the key on failure. A workflow's root config (for
example `brlm.config.pretrain.RunConfig`) picks the sections it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from brlm.config.base import check, setting
from brlm.errors import ConfigError


@dataclass
class DataConfig:
    source: str = setting("builtin:demo", "corpus: builtin:demo, a .jsonl/.jsonl.gz file, a .txt file or a folder of .txt files")
    text_field: str = setting("text", "JSON field that holds the document text")
    txt_mode: str = setting("blocks", "how a .txt file splits into documents: 'blocks' (blank-line separated) or 'lines'")
    nfkc: bool = setting(True, "apply Unicode NFKC normalisation")
    min_doc_chars: int = setting(200, "drop documents shorter than this after cleaning")
    dedup: bool = setting(True, "drop exact duplicates (same cleaned text)")
    val_fraction: float = setting(0.1, "share of documents in the validation split (by content hash)")
    split_salt: str = setting("brlm", "salt of the content hash that assigns splits; changing it reshuffles the split")
    max_docs: int = setting(0, "read at most this many documents (0 = all)")
    id_field: str = setting("id", "JSON field / CSV column with the document id (missing: file:line)")
    test_fraction: float = setting(0.0, "share of documents in the test split (by content hash; 0 = no test split)")
    exclude: str = setting("", "comma-separated files whose documents must not appear in any split (overlap guard)")
    hf_split: str = setting("train", "split read from a Hugging Face dataset (hf:NAME sources)")
    hf_config: str = setting("", "configuration name of a Hugging Face dataset (hf:NAME sources)")
    cache_dir: str = setting("", "cache folder for hf:NAME sources and `brlm data get` (empty: ~/.cache/brlm)")
    workers: int = setting(1, "worker processes that tokenize documents into shards (0 = one per CPU core)")

    def __post_init__(self) -> None:
        check(self.txt_mode in ("blocks", "lines"), "data.txt_mode", self.txt_mode, "'blocks' or 'lines'")
        check(self.min_doc_chars >= 1, "data.min_doc_chars", self.min_doc_chars, "an integer >= 1")
        check(0.0 < self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "a number in (0, 1)")
        check(self.max_docs >= 0, "data.max_docs", self.max_docs, "an integer >= 0")
        check(0.0 <= self.test_fraction < 1.0 and self.val_fraction + self.test_fraction < 1.0, "data.test_fraction",
               self.test_fraction, f"a number in [0, 1 - data.val_fraction={self.val_fraction})")
        check(self.workers >= 0, "data.workers", self.workers, "an integer >= 0")


CLEAN_PRESETS: dict[str, dict[str, Any]] = {
    # What we recommend for Transformers: keep case, digits and punctuation; only normalise
    # Unicode, drop invisible characters and collapse whitespace (brlm's behaviour before presets).
    "natural": {},
    # Article 1 (char-level v1-v3), as the seeds' training logs record it (train_brwac_v{1,2,3}_20k.json,
    # "cleaning"): lower-case, lines under 40 characters or under 40 % letters out, numbers normalised
    # (brlm: folded to 0; the logs name the rule, not its form), upper-case headers removed.
    "seed-v1": {"lowercase": True, "min_line_chars": 40, "min_alpha_ratio": 0.4, "digits_to_zero": True,
                "drop_upper_lines": True},
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
    preset: str = setting("natural", "cleaning preset the other clean.* values started from: natural, seed-v1, seed-v6")
    strip_invisible: bool = setting(True, "remove BOM, zero-width characters, soft hyphens and control characters")
    remove_urls: bool = setting(False, "remove URLs (http://, https://, www.)")
    remove_emails: bool = setting(False, "remove e-mail addresses")
    pii: bool = setting(False, "replace CPF, CNPJ, phone numbers, e-mails and CEP by <CPF>, <CNPJ>, <TELEFONE>, <EMAIL>, <CEP>")
    lowercase: bool = setting(False, "lower-case everything")
    digits_to_zero: bool = setting(False, "replace every number of 2 or more digits by 0")
    punct_filter: bool = setting(False, "replace punctuation not in clean.punct_whitelist by a space")
    punct_whitelist: str = setting(".,;:!?'\"()-", "punctuation kept when clean.punct_filter is on (letters, digits, spaces always kept)")
    collapse_spaces: bool = setting(True, "collapse runs of spaces/tabs inside a line and trim lines")
    newlines: str = setting("blank", "newlines: 'keep', 'blank' (at most one blank line), 'single' (no blank lines), 'space' (one line)")
    min_line_chars: int = setting(0, "drop lines shorter than this (seeds: 40; 0 = off)")
    min_alpha_ratio: float = setting(0.0, "drop lines whose share of letters is below this (seeds: 0.4; 0 = off)")
    drop_upper_lines: bool = setting(False, "drop short all-upper-case lines (headers, metadata)")
    upper_line_max_chars: int = setting(80, "an all-upper-case line at most this long counts as a header")
    eod_marker: str = setting("", "text appended after each document on a line of its own (seeds: <|endoftext|>; empty = none)")
    near_dedup: bool = setting(False, "drop near-duplicates with MinHash LSH (needs `pip install 'brlm[dedup]'`)")
    near_dedup_threshold: float = setting(0.8, "estimated Jaccard similarity of 5-word shingles above which a document is a near-duplicate")
    near_dedup_num_perm: int = setting(128, "MinHash permutations (more: slower, more exact)")

    def __post_init__(self) -> None:
        check(self.preset in CLEAN_PRESETS, "clean.preset", self.preset, f"one of {', '.join(CLEAN_PRESETS)}")
        check(self.newlines in ("keep", "blank", "single", "space"), "clean.newlines", self.newlines,
               "'keep', 'blank', 'single' or 'space'")
        check(self.min_line_chars >= 0, "clean.min_line_chars", self.min_line_chars, "an integer >= 0")
        check(0.0 <= self.min_alpha_ratio <= 1.0, "clean.min_alpha_ratio", self.min_alpha_ratio, "a number in [0, 1]")
        check(self.upper_line_max_chars >= 1, "clean.upper_line_max_chars", self.upper_line_max_chars, "an integer >= 1")
        check(0.0 < self.near_dedup_threshold < 1.0, "clean.near_dedup_threshold", self.near_dedup_threshold, "a number in (0, 1)")
        check(16 <= self.near_dedup_num_perm <= 1024, "clean.near_dedup_num_perm", self.near_dedup_num_perm, "an integer in [16, 1024]")


def clean_preset_overrides(name: str) -> list[str]:
    """`--clean NAME` as `--set clean.*=...` overrides (user --set values given later win)."""
    if name not in CLEAN_PRESETS:
        raise ConfigError(f"--clean {name!r}: unknown cleaning preset; available: {', '.join(CLEAN_PRESETS)}")
    defaults = {f.name: f.default for f in dataclasses.fields(CleanConfig)}
    values = {**defaults, **CLEAN_PRESETS[name], "preset": name}
    return [f"clean.{k}={v}" for k, v in values.items()]


@dataclass
class TokenizerConfig:
    kind: str = setting("spm", "tokenizer family: 'spm' (SentencePiece) or 'char' (one token per character)")
    # Defaults: what README recommends (measured on Fake.br, benchmarks/RESULTS.md): BPE, digits not split.
    model_type: str = setting("bpe", "SentencePiece algorithm: 'bpe' or 'unigram'")
    vocab_size: int = setting(2000, "vocabulary size, including special and byte-fallback pieces")
    byte_fallback: bool = setting(True, "encode unseen characters as UTF-8 byte pieces instead of <unk>")
    # SentencePiece's guidance: 1.0 for languages with a small alphabet (0.9995 is for Chinese or Japanese);
    # at 0.9995 a 16k BPE on Fake.br sends Y, W and K to byte fallback.
    character_coverage: float = setting(1.0, "share of characters covered by the vocabulary (rest: byte fallback); 1.0 for Portuguese")
    input_sentence_size: int = setting(2_000_000, "maximum lines SentencePiece samples for training")
    shuffle_input_sentence: bool = setting(True, "shuffle the lines before SentencePiece samples input_sentence_size of them")
    user_defined_symbols: str = setting("", "comma-separated pieces always kept whole, e.g. <|endoftext|>,<CPF> (newline always is)")
    split_digits: bool = setting(False, "split numbers into single digits (spm)")
    max_piece_length: int = setting(16, "longest piece in characters (spm)")
    unk_id: int = setting(0, "id of <unk>")
    bos_id: int = setting(1, "id of <s> (begin of text)")
    eos_id: int = setting(2, "id of </s> (end of text; separates documents in shards)")
    pad_id: int = setting(-1, "id of <pad> (-1 = no padding token)")
    min_frequency: int = setting(1, "char tokenizer: characters seen fewer times in the train split become <unk>")
    allow_misaligned: bool = setting(False, "use a tokenizer whose cleaning config differs from the data's (recorded; normally an error)")

    def __post_init__(self) -> None:
        check(self.kind in ("spm", "char"), "tokenizer.kind", self.kind, "'spm' or 'char'")
        check(self.model_type in ("unigram", "bpe"), "tokenizer.model_type", self.model_type, "'unigram' or 'bpe'")
        # 256 byte pieces + 3 specials must fit when byte fallback is on.
        low = 300 if self.byte_fallback else 16
        check(low <= self.vocab_size <= 1_000_000, "tokenizer.vocab_size", self.vocab_size, f"an integer in [{low}, 1000000]")
        check(0.9 <= self.character_coverage <= 1.0, "tokenizer.character_coverage", self.character_coverage, "a number in [0.9, 1]")
        check(self.input_sentence_size > 0, "tokenizer.input_sentence_size", self.input_sentence_size, "an integer > 0")
        check(self.min_frequency >= 1, "tokenizer.min_frequency", self.min_frequency, "an integer >= 1")
        ids = [i for i in (self.unk_id, self.bos_id, self.eos_id, self.pad_id) if i >= 0]
        check(self.unk_id >= 0 and len(set(ids)) == len(ids) and max(ids) < 4, "tokenizer.unk_id/bos_id/eos_id/pad_id",
               (self.unk_id, self.bos_id, self.eos_id, self.pad_id), "distinct ids in [0, 3] (-1 = none; unk required)")
        check(self.bos_id >= 0 and self.eos_id >= 0, "tokenizer.bos_id/eos_id", (self.bos_id, self.eos_id),
               "ids >= 0 (brlm separates documents with eos)")
        check(self.max_piece_length >= 1, "tokenizer.max_piece_length", self.max_piece_length, "an integer >= 1")


def swiglu_width(n_embd: int, multiple_of: int = 64) -> int:
    """SwiGLU width: 2/3 of 4·d (same parameters as a 4·d GELU MLP), rounded up to a multiple of 64."""
    return multiple_of * ((int(8 * n_embd / 3) + multiple_of - 1) // multiple_of)


@dataclass
class ModelConfig:
    arch: str = setting("gpt", "architecture name in brlm.models.registry: gpt, llama, moe, rnn")
    n_layer: int = setting(4, "number of Transformer blocks (rnn: recurrent layers)")
    n_head: int = setting(4, "attention (query) heads per block")
    n_kv_head: int = setting(0, "key/value heads for grouped-query attention (0 = n_head, i.e. plain multi-head)")
    n_embd: int = setting(128, "embedding (residual stream) width")
    block_size: int = setting(128, "context length in tokens")
    dropout: float = setting(0.1, "dropout probability in training")
    bias: bool = setting(True, "use biases in linear layers and LayerNorm (gpt)")
    mlp_hidden: int = setting(0, "hidden width of the MLP / SwiGLU (0 = 4*n_embd for gpt, a multiple of 64 near 8/3*n_embd for llama)")
    tie_embeddings: bool = setting(True, "share the input embedding and the output head")
    rope_base: float = setting(10000.0, "RoPE base frequency (llama, moe)")
    qk_norm: bool = setting(False, "RMS-normalise queries and keys per head before attention (llama, moe)")
    norm_eps: float = setting(1e-5, "epsilon of LayerNorm / RMSNorm")
    n_expert: int = setting(4, "experts in each MoE FFN (moe)")
    expert_top_k: int = setting(2, "experts each token is routed to (moe)")
    expert_hidden: int = setting(0, "hidden width of each expert (0 = mlp_hidden rule) (moe)")
    aux_loss_coef: float = setting(0.01, "weight of the MoE load-balancing loss (moe)")
    z_loss_coef: float = setting(0.001, "weight of the MoE router z-loss (moe)")
    rnn_cell: str = setting("lstm", "recurrent cell: 'lstm' or 'gru' (rnn)")
    rnn_hidden: int = setting(256, "hidden size of each recurrent layer (rnn)")
    rnn_layernorm: bool = setting(False, "LayerNorm between recurrent layers (rnn)")
    final_dropout: float = setting(0.0, "dropout on the last recurrent layer's output, before the head (rnn; the seeds' v3: 0.1)")

    def __post_init__(self) -> None:
        for key in ("n_layer", "n_head", "n_embd", "block_size", "n_expert", "expert_top_k", "rnn_hidden"):
            value = getattr(self, key)
            check(isinstance(value, int) and value >= 1, f"model.{key}", value, "an integer >= 1")
        for key in ("n_kv_head", "mlp_hidden", "expert_hidden"):
            check(getattr(self, key) >= 0, f"model.{key}", getattr(self, key), "an integer >= 0")
        check(self.n_embd % self.n_head == 0, "model.n_embd", self.n_embd, f"a multiple of model.n_head={self.n_head}")
        kv = self.n_kv_head or self.n_head
        check(self.n_head % kv == 0, "model.n_kv_head", self.n_kv_head, f"a divisor of model.n_head={self.n_head}")
        check(self.expert_top_k <= self.n_expert, "model.expert_top_k", self.expert_top_k, f"at most model.n_expert={self.n_expert}")
        check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a number in [0, 1)")
        check(0.0 <= self.final_dropout < 1.0, "model.final_dropout", self.final_dropout, "a number in [0, 1)")
        check(self.rope_base > 0, "model.rope_base", self.rope_base, "a number > 0")
        check(self.rnn_cell in ("lstm", "gru"), "model.rnn_cell", self.rnn_cell, "'lstm' or 'gru'")

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
    batch_size: int = setting(16, "windows per forward pass in each process (optimizer step: batch_size x grad_accum x processes)")
    max_steps: int = setting(500, "optimizer steps (ignored when train.epochs > 0)")
    epochs: float = setting(0.0, "training budget in passes over the training windows; > 0 sets max_steps = "
                                 "ceil(epochs x windows / (batch_size x grad_accum x processes)) (0 = use max_steps)")
    budget_bytes: int = setting(0, "training budget in bytes of text seen (steps x windows x block x the train shard's bytes per "
                                  "token); > 0 sets max_steps, the same budget for char and subword tokenizers (0 = off)")
    budget_tokens: int = setting(0, "training budget in tokens seen (steps x windows x block); > 0 sets max_steps. Across "
                                    "tokenizers prefer budget_bytes: equal tokens give a subword model several times the text of a char model (0 = off)")
    label_smoothing: float = setting(0.0, "label smoothing of the training cross-entropy (validation and eval stay unsmoothed)")
    stride: int = setting(64, "step between consecutive training windows, in tokens (1 = every position)")
    lr: float = setting(1e-3, "peak learning rate (AdamW)")
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = setting(50, "linear warmup steps")
    weight_decay: float = setting(0.1, "AdamW weight decay (applied to matrices only)")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.95, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the global gradient norm to this (0 = off)")
    eval_interval: int = setting(50, "steps between validation-loss measurements")
    eval_windows: int = setting(64, "validation windows used for the periodic validation loss")
    log_interval: int = setting(10, "steps between progress lines")
    seed: int = setting(1337, "seed for weights, data order and dropout")
    device: str = setting("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    threads: int = setting(0, "CPU threads for PyTorch (0 = PyTorch's default)")
    grad_accum: int = setting(1, "micro-batches whose gradients add up before each optimizer step")
    schedule: str = setting("cosine", "learning-rate schedule after warmup: 'cosine', 'constant' or 'plateau' (reduce on validation plateau)")
    plateau_factor: float = setting(0.5, "plateau schedule: multiply the lr by this when validation stops improving")
    plateau_patience: int = setting(2, "plateau schedule: validations without improvement before the lr is reduced")
    early_stop_patience: int = setting(0, "stop after this many validations without improvement (0 = never)")
    save_interval: int = setting(0, "steps between resume checkpoints (0 = every eval_interval)")
    keep_checkpoints: int = setting(2, "recent checkpoints kept besides the best one; older ones are deleted")
    dtype: str = setting("auto", "'auto' (bf16 autocast on GPUs that support it, and on CPUs with native bf16 where a short probe of the model shows it faster; else fp32), 'fp32' or 'bf16'")
    compile: bool = setting(False, "torch.compile the model for training (slow first steps, faster after)")
    cpu_allocator: str = setting("keep", "on CPU, 'keep': glibc keeps freed memory for the next step instead of returning it to the OS (no page faults on fresh tensors; resident size stays at its peak); 'system': the allocator's defaults")
    peak_tflops: float = setting(0.0, "hardware peak TFLOP/s per process, for the MFU figure (0 = GPU table or the measured CPU matmul peak)")

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_steps", "stride", "eval_interval", "eval_windows", "log_interval"):
            value = getattr(self, key)
            check(isinstance(value, int) and value >= 1, f"train.{key}", value, "an integer >= 1")
        check(self.epochs >= 0, "train.epochs", self.epochs, "a number >= 0 (0 = use train.max_steps)")
        check(self.budget_bytes >= 0, "train.budget_bytes", self.budget_bytes, "an integer >= 0 (0 = off)")
        check(self.budget_tokens >= 0, "train.budget_tokens", self.budget_tokens, "an integer >= 0 (0 = off)")
        budgets = [k for k in ("epochs", "budget_bytes", "budget_tokens") if getattr(self, k) > 0]
        check(len(budgets) <= 1, f"train.{budgets[-1] if budgets else 'epochs'}", getattr(self, budgets[-1]) if budgets else 0,
              f"0 when train.{budgets[0] if budgets else ''} is set (one budget at a time)")
        check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", self.label_smoothing, "a number in [0, 1)")
        check(self.lr > 0, "train.lr", self.lr, "a number > 0")
        check(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, f"a number in [0, train.lr={self.lr}]")
        check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0")
        check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", (self.beta1, self.beta2), "numbers in [0, 1)")
        check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a number >= 0")
        check(self.threads >= 0, "train.threads", self.threads, "an integer >= 0")
        ok_device = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        check(ok_device, "train.device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        check(isinstance(self.grad_accum, int) and self.grad_accum >= 1, "train.grad_accum", self.grad_accum, "an integer >= 1")
        check(self.schedule in ("cosine", "constant", "plateau"), "train.schedule", self.schedule, "'cosine', 'constant' or 'plateau'")
        check(0 < self.plateau_factor < 1, "train.plateau_factor", self.plateau_factor, "a number in (0, 1)")
        check(self.plateau_patience >= 1, "train.plateau_patience", self.plateau_patience, "an integer >= 1")
        check(self.early_stop_patience >= 0, "train.early_stop_patience", self.early_stop_patience, "an integer >= 0")
        check(self.save_interval >= 0, "train.save_interval", self.save_interval, "an integer >= 0")
        check(self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        check(self.dtype in ("auto", "fp32", "bf16"), "train.dtype", self.dtype, "'auto', 'fp32' or 'bf16'")
        check(self.cpu_allocator in ("keep", "system"), "train.cpu_allocator", self.cpu_allocator, "'keep' or 'system'")
        check(self.peak_tflops >= 0, "train.peak_tflops", self.peak_tflops, "a number >= 0")


@dataclass
class EvalConfig:
    stride: int = setting(0, "step between evaluation windows (0 = block_size, no overlap)")
    max_windows: int = setting(512, "evaluate at most this many validation windows, evenly spread")
    batch_size: int = setting(16, "windows per forward pass")
    category_field: str = setting("auto", "document field for the per-category breakdown ('auto': category, domain, categoria; '' = off)")
    windows_cache: str = setting("", "folder for the fixed window sets, keyed by shard hash, block and stride ('' = <run>/eval_windows)")

    def __post_init__(self) -> None:
        check(self.stride >= 0, "eval.stride", self.stride, "an integer >= 0")
        check(self.max_windows >= 1, "eval.max_windows", self.max_windows, "an integer >= 1")
        check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")


@dataclass
class SampleConfig:
    prompts: str = setting("builtin:prompts", "prompts: builtin:prompts or a text file with one prompt per line")
    max_new_tokens: int = setting(60, "tokens generated per prompt")
    temperature: float = setting(0.8, "softmax temperature (0 = greedy)")
    top_k: int = setting(50, "keep the k most likely tokens (0 = off)")
    top_p: float = setting(0.95, "keep the smallest set of tokens with this much probability (1 = off)")
    seed: int = setting(1234, "sampling seed")
    num_samples: int = setting(1, "samples per prompt (seeds seed, seed+1, ...)")
    repetition_penalty: float = setting(1.0, "divide logits of tokens already in the context by this (1 = off; CTRL)")
    stop: str = setting("", "stop strings separated by '|' ('\\n' for a newline); the completion ends before the first")
    use_cache: bool = setting(True, "decode with the model's KV cache / carried state when it has one")
    compile: bool = setting(False, "capture the decode step with torch.compile (the first call compiles; "
                                   "worth it for many or long generations)")
    dtype: str = setting("fp32", "decode weights: fp32, bf16, or auto (bf16 where the CPU has native bf16 matmuls and the model's linear layers measure faster in bf16)")

    def __post_init__(self) -> None:
        check(self.max_new_tokens >= 1, "sample.max_new_tokens", self.max_new_tokens, "an integer >= 1")
        check(self.dtype in ("fp32", "bf16", "auto"), "sample.dtype", self.dtype, "fp32, bf16 or auto")
        check(self.temperature >= 0, "sample.temperature", self.temperature, "a number >= 0")
        check(self.top_k >= 0, "sample.top_k", self.top_k, "an integer >= 0")
        check(0 < self.top_p <= 1, "sample.top_p", self.top_p, "a number in (0, 1]")
        check(self.num_samples >= 1, "sample.num_samples", self.num_samples, "an integer >= 1")
        check(self.repetition_penalty > 0, "sample.repetition_penalty", self.repetition_penalty, "a number > 0")


@dataclass
class GuardrailsConfig:
    prompts: str = setting("builtin:prompts", "prompts: builtin:prompts or a text file with one prompt per line")
    num_seeds: int = setting(5, "samples per prompt, seeds sample.seed, sample.seed+1, ...")
    max_new_tokens: int = setting(0, "tokens generated per sample (0 = sample.max_new_tokens)")
    max_byte_fallback: float = setting(0.03, "pass when at most this share of generated tokens are byte-fallback pieces")
    max_short_piece: float = setting(0.12, "pass when at most this share of generated pieces are alphabetic with <= 2 characters")
    short_piece_chars: int = setting(2, "an alphabetic piece this short or shorter counts as a short piece")

    def __post_init__(self) -> None:
        check(self.num_seeds >= 1, "guardrails.num_seeds", self.num_seeds, "an integer >= 1")
        check(self.max_new_tokens >= 0, "guardrails.max_new_tokens", self.max_new_tokens, "an integer >= 0")
        check(0 <= self.max_byte_fallback <= 1, "guardrails.max_byte_fallback", self.max_byte_fallback, "a number in [0, 1]")
        check(0 <= self.max_short_piece <= 1, "guardrails.max_short_piece", self.max_short_piece, "a number in [0, 1]")
        check(self.short_piece_chars >= 1, "guardrails.short_piece_chars", self.short_piece_chars, "an integer >= 1")


@dataclass
class CostConfig:
    price_usd_per_hour: float = setting(0.0, "US$ per hour of the device used (0 = from the price table, brlm/resources/prices.yaml)")
    price_as: str = setting("", "price the run as if trained on this device of the table, e.g. rtx4090 ('' = the device used)")
    price_file: str = setting("", "a YAML price table that extends/overrides the built-in one ('' = built-in only)")
    brl_per_usd: float = setting(0.0, "BRL per USD, to also report costs in reais (0 = USD only)")
    assumed_mfu: float = setting(0.35, "MFU assumed when projecting the run's time onto another device (cost.price_as)")
    peak_flops_per_s: float = setting(0.0, "the device's peak FLOP/s for MFU (0 = GPU table, or measured once per machine on CPU)")

    def __post_init__(self) -> None:
        check(self.price_usd_per_hour >= 0, "cost.price_usd_per_hour", self.price_usd_per_hour, "a number >= 0")
        check(self.brl_per_usd >= 0, "cost.brl_per_usd", self.brl_per_usd, "a number >= 0")
        check(0 < self.assumed_mfu <= 1, "cost.assumed_mfu", self.assumed_mfu, "a number in (0, 1]")
        check(self.peak_flops_per_s >= 0, "cost.peak_flops_per_s", self.peak_flops_per_s, "a number >= 0")
