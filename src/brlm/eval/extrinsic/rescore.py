"""Recompute extrinsic metrics from saved outputs: brlm's details files and the seeds' ones.

    brlm eval extrinsic rescore details.jsonl [--compat seeds] [--repair-leak] [--json]

Two per-item formats are read (one JSON object a line; the first line decides the format):

* brlm's, written by `detail_row` as generation goes (one line per item and model):
  `hash`, `task`, `model`, `prompt` (exactly what the model was given), `raw_output` (decoded
  continuation), `answer` (what is scored: the first non-empty line for QA, the stripped output
  otherwise), `reference`, `metrics` ({em, f1, rouge_l, chrf}); optional `assistant_header`
  (a regular expression for the chat template's assistant header, for `--repair-leak`).
* the seeds' (their eval_trilha2_extrinsic_details*.jsonl): `task`, `hash`, `instruction`,
  `input`, `reference`, `base_output`, `sft_output`, `metrics` — two sides per line.

`--repair-leak` undoes the seeds' slicing defect. They cut each answer at `attention_mask.sum()`
of a left-padded batch, so an output is the last k prompt tokens + the whole generation: with
Llama 3's template decoded without special tokens, "<end of the prompt>assistant\\n\\n<answer>".
An output is repaired when the text before an assistant header is a tail of the prompt (or ends
with the whole user prompt, when the leak reaches into the system preamble), compared with
whitespace and special tokens removed; nothing is lost from the generation itself.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brlm.errors import DataError
from brlm.eval.extrinsic.metrics import score_item
from brlm.eval.extrinsic.normalize import check_compat, first_line
from brlm.eval.extrinsic.tasks import Item, check_task, iter_jsonl, str_field

TABLE_METRICS = ("em", "f1", "rouge_l")
SEEDS_SIDES = ("base", "sft")
# Llama 3 (`<|start_header_id|>assistant<|end_header_id|>`) and ChatML (`<|im_start|>assistant`)
# headers, with or without their special tokens (skip_special_tokens=True leaves "assistant").
DEFAULT_HEADER = r"(?:<\|start_header_id\|>|<\|im_start\|>)?assistant(?:<\|end_header_id\|>)?(?=\s|$)"
_SPECIAL = re.compile(r"<\|[^|<>\s]*\|>")


def extract_answer(task: str, raw_output: str) -> str:
    """What is scored: QA's first non-empty line; the stripped output for the other tasks."""
    return first_line(raw_output) if task == "qa" else (raw_output or "").strip()


def seeds_user_prompt(instruction: str, input: str) -> str:
    """The user message the seeds built from an item (instruction, then 'Entrada:' and the input)."""
    instruction, input = (instruction or "").strip(), (input or "").strip()
    return f"{instruction}\n\nEntrada:\n{input}".strip() if input else instruction


def _squash(text: str) -> str:
    return "".join(_SPECIAL.sub("", text).split())


def repair_leak(output: str, prompt: str, header: str = DEFAULT_HEADER) -> tuple[str, bool]:
    """(output without a leaked prompt tail and assistant header, whether it was cut)."""
    tail = _squash(prompt)
    for m in re.finditer(header, output):
        # A multi-byte character split by the cut decodes as U+FFFD at the start.
        pre = _squash(output[:m.start()]).lstrip("\ufffd")
        if tail.endswith(pre) or (tail and pre.endswith(tail)):
            return output[m.end():].strip(), True
    return output, False


def detail_row(item: Item, model: str, prompt: str, raw_output: str, *, compat: str | None = None,
               assistant_header: str | None = None) -> dict[str, Any]:
    """One line of brlm's details JSONL for `item` answered by `model`."""
    row = {"hash": item.hash, "task": item.task, "model": model, "prompt": prompt, "raw_output": raw_output,
           "answer": extract_answer(item.task, raw_output), "reference": item.reference,
           "metrics": score_item(raw_output, item.reference, compat=compat)}
    if assistant_header:
        row["assistant_header"] = assistant_header
    return row


@dataclass
class Record:
    """One item of a details file: its reference, the prompt, and one output per side (model)."""

    task: str
    hash: str
    reference: str
    prompt: str
    outputs: dict[str, str]
    header: str = DEFAULT_HEADER
    stored: dict[str, dict[str, float]] = field(default_factory=dict)
    where: str = ""


def _seeds_record(obj: dict[str, Any], where: str) -> Record:
    task = check_task(str_field(obj, "task", where, nonempty=True), where)
    instruction, inp = str_field(obj, "instruction", where, nonempty=True), str_field(obj, "input", where)
    outputs = {side: str_field(obj, f"{side}_output", where) for side in SEEDS_SIDES}
    stored = obj.get("metrics")
    if not isinstance(stored, dict) or not all(isinstance(stored.get(s), dict) for s in SEEDS_SIDES):
        raise DataError(f"{where}: field 'metrics' must be an object with 'base' and 'sft' objects")
    return Record(task, str_field(obj, "hash", where, nonempty=True), str_field(obj, "reference", where, nonempty=True),
                  seeds_user_prompt(instruction, inp), outputs, stored=stored, where=where)


def _brlm_record(obj: dict[str, Any], where: str) -> Record:
    task = check_task(str_field(obj, "task", where, nonempty=True), where)
    model = str_field(obj, "model", where, nonempty=True)
    header = str_field(obj, "assistant_header", where, required=False) or DEFAULT_HEADER
    try:
        re.compile(header)
    except re.error as e:
        raise DataError(f"{where}: field 'assistant_header' is not a regular expression ({e})") from None
    return Record(task, str_field(obj, "hash", where, nonempty=True), str_field(obj, "reference", where, nonempty=True),
                  str_field(obj, "prompt", where), {model: str_field(obj, "raw_output", where)}, header=header, where=where)


def read_details(path: str | Path) -> tuple[str, list[Record]]:
    """('seeds' | 'brlm', records) of a details JSONL; every line must be of the first line's format."""
    fmt, records = None, []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        kind = "seeds" if ("base_output" in obj or "sft_output" in obj) else "brlm"
        if fmt is None:
            fmt = kind
        elif kind != fmt:
            raise DataError(f"{where}: a line in the {kind} format in a file of {fmt} lines")
        records.append(_seeds_record(obj, where) if kind == "seeds" else _brlm_record(obj, where))
    if fmt is None:
        raise DataError(f"{path}: no items")
    return fmt, records


@dataclass
class Rescored:
    """Per-item scores and the summary table of one details file."""

    format: str
    table: dict[str, dict[str, dict[str, float]]]
    # task -> side -> metric -> per-item scores; keys[task][side] pair items across sides.
    scores: dict[str, dict[str, dict[str, list[float]]]]
    keys: dict[str, dict[str, list[tuple[str, int]]]]
    repaired: dict[str, int]
    empty: dict[str, int]
    outputs: dict[str, int]
    stored_mismatches: int | None = None


def rescore(records: list[Record], *, fmt: str = "brlm", compat: str | None = None, repair: bool = False) -> Rescored:
    """Recompute every metric; `compat='seeds'` scores as the seeds did, `repair` cuts leaked prompts."""
    check_compat(compat)
    scores: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    keys: dict = defaultdict(lambda: defaultdict(list))
    repaired: dict[str, int] = defaultdict(int)
    empty: dict[str, int] = defaultdict(int)
    outputs: dict[str, int] = defaultdict(int)
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    mismatches = 0
    for rec in records:
        for side, out in rec.outputs.items():
            outputs[side] += 1
            if repair:
                out, cut = repair_leak(out, rec.prompt, rec.header)
                repaired[side] += int(cut)
            if not out.strip():
                empty[side] += 1
            s = score_item(out, rec.reference, compat=compat)
            for name, value in s.items():
                scores[rec.task][side][name].append(value)
            # Sets may repeat an item: pair the k-th occurrence of a hash with the k-th on the other side.
            seen[(rec.task, side, rec.hash)] += 1
            keys[rec.task][side].append((rec.hash, seen[(rec.task, side, rec.hash)]))
            if fmt == "seeds" and compat == "seeds" and not repair:
                stored = rec.stored.get(side, {})
                pairs = [("em", "em"), ("f1", "f1")] if rec.task == "qa" else [("rouge_l_f1", "rouge_l")]
                if any(k in stored and abs(float(stored[k]) - s[m]) > 1e-9 for k, m in pairs):
                    mismatches += 1
    table = {
        task: {side: {**{m: sum(v[m]) / len(v[m]) for m in TABLE_METRICS}, "n": len(v["em"])} for side, v in sides.items()}
        for task, sides in scores.items()
    }
    return Rescored(fmt, table, {t: {s: dict(m) for s, m in v.items()} for t, v in scores.items()},
                    {t: dict(v) for t, v in keys.items()}, dict(repaired), dict(empty), dict(outputs),
                    mismatches if (fmt == "seeds" and compat == "seeds" and not repair) else None)


def rescore_file(path: str | Path, *, compat: str | None = None, repair: bool = False) -> Rescored:
    fmt, records = read_details(path)
    return rescore(records, fmt=fmt, compat=compat, repair=repair)


def paired_scores(r: Rescored, task: str, side_a: str, side_b: str, metric: str) -> tuple[list[float], list[float]]:
    """The two sides' scores on the items both answered, in the same order."""
    a = dict(zip(r.keys[task][side_a], r.scores[task][side_a][metric]))
    b = dict(zip(r.keys[task][side_b], r.scores[task][side_b][metric]))
    common = [k for k in r.keys[task][side_a] if k in b]
    return [a[k] for k in common], [b[k] for k in common]
