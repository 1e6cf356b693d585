"""Post-training data: records -> token examples with their targets -> packed rows.

An `Example` is `input_ids` and `targets`, already shifted: `targets[t]` is the token position t
must predict, or -100 where nothing is learned. SFT learns only the response tokens (every
assistant turn of a chat), so `targets[t] = input_ids[t + 1]` exactly when token t + 1 belongs to
a response; CPT learns every next token of a document. The last position of an example never
predicts anything, so packed examples never learn across their boundary either.

Records (JSONL, one object a line; `.jsonl.gz` too):

* instruction (Canarim): {"instruction", "input" (optional), "output"}
* messages:              {"messages": [{"role": "system|user|assistant", "content": ...}, ...]}
* preference (DPO):      {"prompt", "chosen", "rejected"}

A prompt is rendered with the tokenizer's chat template (exported brlm models carry a PT-BR one,
brlm.tokenizers.hf.CHAT_TEMPLATE) or, for instruction records on a tokenizer without one, as
"### Instrução: / ### Entrada: / ### Resposta:". Each turn is tokenized on its own and the ids
concatenated, so the prompt's tokens are exactly the ids generation will start from.

Bad input: a line that is not JSON or a record without its required fields is a DataError naming
file, line and field; empty responses, `chosen == rejected` and examples longer than
`finetune.seq_len` (truncated or skipped) are dropped and counted in `DataCounts`.

Packing (`pack_rows`) puts several examples in one row of at most seq_len tokens (best fit,
longest first). `collate` gives every example its own position ids starting at 0; transformers
turns a reset of the position ids into a block-diagonal causal mask (masking_utils,
find_packed_sequence_indices), so a token never attends to another example. `check_isolation`
proves it on the actual model before training (tests/test_posttrain_data.py too).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brlm.config.posttrain import FinetuneConfig, PairsConfig
from brlm.data.splits import split_of
from brlm.errors import DataError
from brlm.io.files import iter_jsonl

IGNORE = -100
BUILTIN_PAIRS = {
    "builtin:instructions": "demo_instructions.jsonl",
    "builtin:preferences": "demo_preferences.jsonl",
}
PLAIN_SYSTEM = "{system}\n\n"
PLAIN_PROMPT = "### Instrução:\n{instruction}\n\n"
PLAIN_INPUT = "### Entrada:\n{input}\n\n"
PLAIN_RESPONSE = "### Resposta:\n"
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    input_ids: list[int]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        return sum(1 for t in self.targets if t != IGNORE)


@dataclass
class DataCounts:
    """What happened to every record: kept, or dropped and why."""

    counts: Counter = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


# ---------------------------------------------------------------------------------------------
# Reading records


def resolve_pairs_path(source: str, key: str = "pairs.train") -> Path:
    if source in BUILTIN_PAIRS:
        return Path(str(resources.files("brlm") / "resources" / BUILTIN_PAIRS[source]))
    if source.startswith("builtin:"):
        raise DataError(f"{key}={source!r}: unknown built-in set; available: {', '.join(BUILTIN_PAIRS)}")
    if not source:
        raise DataError(f"{key} is empty: give a JSONL file of training pairs (or builtin:instructions / builtin:preferences)")
    p = Path(source).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: file not found ({key}); expected a JSONL file")
    return p


def detect_format(record: dict[str, Any], pc: PairsConfig, where: str) -> str:
    if pc.messages_field in record:
        return "messages"
    if pc.chosen_field in record or pc.rejected_field in record:
        return "preference"
    if pc.output_field in record or pc.instruction_field in record:
        return "instruction"
    raise DataError(
        f"{where}: cannot tell the record's format from its fields {sorted(record)}; expected "
        f"'{pc.instruction_field}'/'{pc.output_field}', '{pc.messages_field}' or "
        f"'{pc.prompt_field}'/'{pc.chosen_field}'/'{pc.rejected_field}' (or set pairs.format)"
    )


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    if key not in record or record[key] is None:
        if required:
            raise DataError(f"{where}: missing field '{key}' (fields present: {', '.join(sorted(record)) or 'none'})")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def record_messages(record: dict[str, Any], fmt: str, pc: PairsConfig, where: str) -> list[dict[str, str]]:
    """An instruction or messages record as a list of {role, content} (system message first if set)."""
    system = [{"role": "system", "content": pc.system}] if pc.system else []
    if fmt == "instruction":
        instruction = _text(record, pc.instruction_field, where)
        extra = _text(record, pc.input_field, where, required=False).strip()
        user = instruction.strip() + (f"\n\n{extra}" if extra else "")
        return system + [{"role": "user", "content": user}, {"role": "assistant", "content": _text(record, pc.output_field, where)}]
    msgs = record[pc.messages_field]
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: field '{pc.messages_field}' must be a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: {pc.messages_field}[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: {pc.messages_field}[{i}].role={m['role']!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: {pc.messages_field}[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    if system and out[0]["role"] != "system":
        out = system + out
    return out


# ---------------------------------------------------------------------------------------------
# Formatting and tokenizing


class Formatter:
    """Renders conversations into (text, learned) segments and tokenizes them.

    `tok` is a transformers tokenizer. `template` is pairs.template; 'chat' needs the tokenizer's
    chat template, 'plain' is the ### Instrução format (instruction records only)."""

    def __init__(self, tok: Any, template: str = "auto", source: str = "the base model"):
        self.tok = tok
        self.source = source
        has_chat = bool(getattr(tok, "chat_template", None))
        if template == "chat" and not has_chat:
            raise DataError(self.no_template_message("pairs.template=chat"))
        self.chat = has_chat if template == "auto" else template == "chat"
        self.eos = tok.eos_token_id
        if self.eos is None:
            raise DataError(f"{source}: the tokenizer has no end-of-text token (eos_token); responses need one to end")
        self.prefix = tok("", add_special_tokens=True)["input_ids"]  # e.g. <|begin_of_text|> for Llama 3

    def no_template_message(self, why: str) -> str:
        return (f"{self.source}: the tokenizer has no chat template, needed for {why}; add `chat_template` to its "
                f"tokenizer_config.json (a brlm export has a PT-BR one) or use instruction records with pairs.template=plain")

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []

    def segments(self, messages: list[dict[str, str]], fmt: str, where: str) -> list[tuple[str, bool]]:
        """(text, learned) pieces whose concatenation is the whole conversation."""
        if self.chat:
            return self._chat_segments(messages, where)
        if fmt == "messages":
            raise DataError(self.no_template_message(f"SFT on chat messages ({where})"))
        system = "".join(PLAIN_SYSTEM.format(system=m["content"]) for m in messages if m["role"] == "system")
        user = next(m["content"] for m in messages if m["role"] == "user")
        instruction, _, extra = user.partition("\n\n")
        prompt = system + PLAIN_PROMPT.format(instruction=instruction) + (PLAIN_INPUT.format(input=extra) if extra else "") + PLAIN_RESPONSE
        answer = next(m["content"] for m in messages if m["role"] == "assistant")
        return [(prompt, False), (answer, True)]

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as e:  # jinja errors (e.g. a role the template refuses)
            raise DataError(f"{self.source}: the chat template failed ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None

    def _chat_segments(self, messages: list[dict[str, str]], where: str) -> list[tuple[str, bool]]:
        segments: list[tuple[str, bool]] = []
        done = ""
        for k, m in enumerate(messages):
            if m["role"] == "assistant":
                head = self._render(messages[:k], add_generation_prompt=True) if k else ""
                full = self._render(messages[: k + 1], add_generation_prompt=False)
                if not head.startswith(done) or not full.startswith(head):
                    raise DataError(f"{where}: the chat template does not render turn by turn (a prefix changed); "
                                    "response-only labels need a template that appends each turn")
                answer = full[len(head):]
                # Learn the answer through its end-of-turn token; what the template adds after it
                # (a newline) is never generated, so it is not learned.
                cut = answer.rfind(self.tok.eos_token) if self.tok.eos_token else -1
                tail = answer[cut + len(self.tok.eos_token):] if cut >= 0 else ""
                segments += [(head[len(done):], False), (answer[: len(answer) - len(tail)], True)] + ([(tail, False)] if tail else [])
                done = full
        full = self._render(messages, add_generation_prompt=False)
        if not full.startswith(done):
            raise DataError(f"{where}: the chat template does not render turn by turn")
        if full[len(done):]:
            segments.append((full[len(done):], False))
        return segments

    def tokenize(self, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
        """ids and a per-token 'learned' mask; the plain format adds the tokenizer's prefix and eos."""
        ids: list[int] = [] if self.chat else list(self.prefix)
        learned: list[bool] = [False] * len(ids)
        for text, is_learned in segments:
            piece = self.encode(text)
            ids += piece
            learned += [is_learned] * len(piece)
        if not self.chat:
            ids.append(self.eos)  # the chat template writes its own end of turn
            learned.append(True)
        return ids, learned


def targets_from_mask(ids: list[int], learned: list[bool]) -> list[int]:
    """targets[t] = ids[t+1] where token t+1 is learned, else -100; the last position learns nothing."""
    out = [ids[t + 1] if learned[t + 1] else IGNORE for t in range(len(ids) - 1)]
    return out + [IGNORE] if ids else []


def fit_length(ids: list[int], learned: list[bool], seq_len: int, policy: str, counts: DataCounts) -> tuple[list[int], list[bool], bool] | None:
    """Keep the start of an example longer than seq_len ('truncate'), or drop it ('skip', counted).
    Returns (ids, learned, truncated) or None."""
    if len(ids) <= seq_len:
        return ids, learned, False
    if policy == "skip":
        counts.add("skipped_too_long")
        return None
    return ids[:seq_len], learned[:seq_len], True


def _finish(ids: list[int], learned: list[bool], truncated: bool, counts: DataCounts) -> Example | None:
    """The example, counting a truncation; None (counted) when truncation left no response."""
    ex = Example(ids, targets_from_mask(ids, learned))
    if ex.n_labels == 0:
        counts.add("no_response_left_after_truncation" if truncated else "no_response")
        return None
    if truncated:
        counts.add("truncated")
    return ex


def sft_example(record: dict[str, Any], fmt: str, fc: FinetuneConfig, pc: PairsConfig, formatter: Formatter,
                counts: DataCounts, where: str) -> Example | None:
    messages = record_messages(record, fmt, pc, where)
    answers = [m for m in messages if m["role"] == "assistant"]
    if not answers:
        raise DataError(f"{where}: no assistant message to learn from")
    if any(not m["content"].strip() for m in answers):
        counts.add("empty_output")
        return None
    ids, learned = formatter.tokenize(formatter.segments(messages, fmt, where))
    fitted = fit_length(ids, learned, fc.seq_len, fc.too_long, counts)
    return None if fitted is None else _finish(*fitted, counts)


def dpo_example(record: dict[str, Any], fc: FinetuneConfig, pc: PairsConfig, formatter: Formatter,
                counts: DataCounts, where: str) -> tuple[Example, Example] | None:
    prompt = _text(record, pc.prompt_field, where)
    chosen = _text(record, pc.chosen_field, where)
    rejected = _text(record, pc.rejected_field, where)
    if not chosen.strip() or not rejected.strip():
        counts.add("empty_output")
        return None
    if chosen.strip() == rejected.strip():
        counts.add("chosen_equals_rejected")
        return None
    system = [{"role": "system", "content": pc.system}] if pc.system else []
    out = []
    for answer in (chosen, rejected):
        msgs = system + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        ids, learned = formatter.tokenize(formatter.segments(msgs, "instruction", where))
        fitted = fit_length(ids, learned, fc.seq_len, fc.too_long, counts)
        ex = None if fitted is None else _finish(*fitted, counts)
        if ex is None:
            return None
        out.append(ex)
    return out[0], out[1]


def document_examples(text: str, tok: Any, seq_len: int, counts: DataCounts) -> list[Example]:
    """A raw-text document (tokenizer prefix + text + eos) in chunks of at most seq_len tokens."""
    ids = tok(text, add_special_tokens=True, verbose=False)["input_ids"] + [tok.eos_token_id]  # long: chunked below
    chunks = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    if len(chunks) > 1:
        counts.add("documents_split", 1)
    out = []
    for c in chunks:
        if len(c) < 2:
            counts.add("chunks_too_short")
            continue
        out.append(Example(c, c[1:] + [IGNORE]))
    return out


# ---------------------------------------------------------------------------------------------
# Whole files


def load_pair_split(path: Path, fc: FinetuneConfig, pc: PairsConfig, formatter: Formatter, counts: DataCounts,
                    keep: str | None = None, limit: int = 0) -> list[Any]:
    """Examples (SFT) or (chosen, rejected) pairs (DPO) of one file. With `keep` ('train' / 'val')
    only the records whose content hash falls in that split (pairs.val_fraction)."""
    out: list[Any] = []
    want = "preference" if fc.task == "dpo" else None
    for n, record in iter_jsonl(path):
        where = f"{path}:{n}"
        fmt = pc.format if pc.format != "auto" else detect_format(record, pc, where)
        if want == "preference" and fmt != "preference":
            raise DataError(f"{where}: DPO needs preference records ('{pc.prompt_field}', '{pc.chosen_field}', "
                            f"'{pc.rejected_field}'); this one looks like {fmt}")
        if want is None and fmt == "preference":
            raise DataError(f"{where}: a preference record ('{pc.chosen_field}'/'{pc.rejected_field}') in SFT data; "
                            "use `brlm finetune dpo` for preference pairs")
        if keep is not None:
            split = split_of(json.dumps(record, sort_keys=True, ensure_ascii=False), pc.val_fraction, "brlm-pairs")
            if split != keep:
                continue
        counts.add("records")
        ex = dpo_example(record, fc, pc, formatter, counts, where) if fc.task == "dpo" else \
            sft_example(record, fmt, fc, pc, formatter, counts, where)
        if ex is not None:
            out.append(ex)
            counts.add("kept")
            if limit and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------------------------------------
# Flat storage (one .npz per split; loaded without pickle)


def save_examples(path: Path, examples: list[Example]) -> None:
    from brlm.io.files import atomic_path

    lengths = np.array([len(e) for e in examples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.array([t for e in examples for t in e.input_ids], dtype=np.int64)
    targets = np.array([t for e in examples for t in e.targets], dtype=np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, targets=targets, offsets=offsets)


def load_examples(path: Path) -> list[Example]:
    with np.load(path, allow_pickle=False) as z:
        ids, targets, offsets = z["ids"], z["targets"], z["offsets"]
    return [Example(ids[a:b].tolist(), targets[a:b].tolist()) for a, b in zip(offsets[:-1], offsets[1:])]


# ---------------------------------------------------------------------------------------------
# Rows, packing and batches


def pack_rows(lengths: list[int], seq_len: int, packing: bool) -> list[list[int]]:
    """Example indices per row. Packing: best fit, longest first (each row holds at most seq_len
    tokens); the rows are in a fixed order, so the packing is the same on every run."""
    if not packing:
        return [[i] for i in range(len(lengths))]
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    by_space: dict[int, list[int]] = {}  # free tokens -> rows with exactly that much room
    for i in order:
        n = lengths[i]
        assert n <= seq_len, "examples are fitted to seq_len before packing"
        best = next((s for s in range(n, seq_len + 1) if by_space.get(s)), None)
        if best is None:
            rows.append([i])
            r, space = len(rows) - 1, seq_len - n
        else:
            r = by_space[best].pop()
            rows[r].append(i)
            space = best - n
        by_space.setdefault(space, []).append(r)
    return rows


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    targets: torch.Tensor  # (B, T), -100 where nothing is learned
    position_ids: torch.Tensor  # (B, T), 0 at the start of every example
    tokens: int  # real (non-padding) tokens
    labels: int  # positions with a target

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.targets.to(device), self.position_ids.to(device), self.tokens, self.labels)


def collate(rows: list[list[Example]], pad_id: int) -> Batch:
    """Rows of examples -> one right-padded batch. Each example's position ids start at 0; the
    padding continues the last example's positions, so it is not a new segment (and has no targets)."""
    flat = [([t for e in row for t in e.input_ids], [t for e in row for t in e.targets],
             [p for e in row for p in range(len(e))]) for row in rows]
    T = max(len(ids) for ids, _, _ in flat)
    B = len(rows)
    x = torch.full((B, T), pad_id, dtype=torch.long)
    y = torch.full((B, T), IGNORE, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    for b, (ids, tg, ps) in enumerate(flat):
        n = len(ids)
        x[b, :n] = torch.tensor(ids)
        y[b, :n] = torch.tensor(tg)
        pos[b, :n] = torch.tensor(ps)
        pos[b, n:] = torch.arange(ps[-1] + 1, ps[-1] + 1 + T - n) if n else torch.arange(T - n)
    return Batch(x, y, pos, sum(len(ids) for ids, _, _ in flat), int((y != IGNORE).sum()))


def check_isolation(model: torch.nn.Module, vocab_size: int, device: torch.device, atol: float = 1e-4) -> None:
    """Run two short examples packed in one row and each alone; their logits must match, or the
    model does not honour per-example position ids (set finetune.packing=false for it)."""
    from brlm.errors import BrlmError

    g = torch.Generator().manual_seed(0)
    a = torch.randint(3, vocab_size, (7,), generator=g)
    b = torch.randint(3, vocab_size, (5,), generator=g)
    packed = torch.cat([a, b]).unsqueeze(0).to(device)
    pos = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            together = model(input_ids=packed, position_ids=pos, use_cache=False).logits.float()
            alone = torch.cat([model(input_ids=t.unsqueeze(0).to(device), use_cache=False).logits.float() for t in (a, b)], dim=1)
    finally:
        model.train(was_training)
    err = (together - alone).abs().max().item()
    if err > atol * max(1.0, alone.abs().max().item()):
        raise BrlmError(f"{type(model).__name__}: packed examples see each other (max logit difference {err:.3g}); "
                        "this model does not isolate packed examples by position ids: set finetune.packing=false")
