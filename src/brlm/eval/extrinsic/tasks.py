"""Extrinsic task sets: the seeds' QA / summarization / rewriting classifier, set building, set reading.

`build_sets(source, exclude, n, seed)` shuffles an instruction JSONL (Canarim fields `instruction`,
`input`, `output`) with the test-set seed, drops every item that also appears in a training file
(matched on a normalised-text hash, so whitespace or case edits do not hide a training item),
classifies the rest by instruction keywords and lengths, and keeps the first `n` of each task.
`write_sets` writes `{qa,summarization,rewriting}.jsonl` (fields `task`, `instruction`, `input`,
`reference`, `hash`, as the shared sets) and `manifest.json` with counts and hashes.

    brlm eval extrinsic build --from sft_10k_test.jsonl --exclude sft_10k_train.jsonl sft_10k_val.jsonl \
        --n 200 --seed 123 --out sets/seed123

`read_set(path)` / `read_sets(folder)` read such sets (brlm's or the seeds') with one-line errors
naming file:line and field.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brlm.errors import DataError
from brlm.io.files import file_sha256, iter_jsonl, write_json, write_text

TASKS = ("qa", "summarization", "rewriting")
SET_FIELDS = ("task", "instruction", "input", "reference", "hash")

# The seeds' heuristic, rule for rule (their 09_prepare_extrinsic_eval_sets.py; the filters are
# also described in the shared sets' manifest.json). Order matters: QA, then summarization, then
# rewriting; an item none of them claims is not used.
QA_MAX_WORDS = 12
QA_HINTS = ("?", "opções de resposta", "(a)", "(b)")
SUMMARY_WORDS = ("resuma", "resumo", "sumarize", "sumarização", "sumariza", "sumário", "sintetize", "síntese")
REWRITE_WORDS = ("reescreva", "reformule", "corrija", "melhore", "parafrase", "paráfrase", "revise", "revisão",
                 "simplifique", "transforme")
CLASSIFIER = {
    "qa": f"output <= {QA_MAX_WORDS} words and the instruction + input has '?', 'opções de resposta', '(a)' or '(b)'",
    "summarization": "a summary keyword, or input >= 120 words with a 30-140-word output <= 0.55 x input",
    "rewriting": "a rewriting keyword, or input and output of 20-220 words with output/input in [0.6, 1.6]",
}


def _keyword_re(words: Sequence[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b")


_SUMMARY_RE, _REWRITE_RE = _keyword_re(SUMMARY_WORDS), _keyword_re(REWRITE_WORDS)
_WORD_RE = re.compile(r"\w+")


def _n_words(text: str) -> int:
    return len(_WORD_RE.findall(text.lower()))


def classify(instruction: str, input: str, output: str) -> str | None:
    """'qa', 'summarization', 'rewriting' or None (fields as stored: the seeds stripped them first)."""
    text = f"{instruction}\n{input}".strip().lower()
    n_in, n_out = _n_words(input), _n_words(output)
    if n_out == 0:
        return None
    if n_out <= QA_MAX_WORDS and any(hint in text for hint in QA_HINTS):
        return "qa"
    if _SUMMARY_RE.search(text) or (n_in >= 120 and 30 <= n_out <= 140 and n_out <= int(0.55 * max(1, n_in))):
        return "summarization"
    if _REWRITE_RE.search(text):
        return "rewriting"
    if 20 <= n_in <= 220 and 20 <= n_out <= 220 and 0.6 <= n_out / max(1, n_in) <= 1.6:
        return "rewriting"
    return None


def item_hash(instruction: str, input: str, output: str) -> str:
    """The shared sets' `hash`: SHA-1 of the stripped fields joined by '\\n---\\n' (the seeds' formula)."""
    return hashlib.sha1(f"{instruction}\n---\n{input}\n---\n{output}".strip().encode("utf-8")).hexdigest()


def _norm_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def norm_hash(instruction: str, input: str, output: str) -> str:
    """Exclusion key: SHA-256 of NFC + casefold + collapsed whitespace of the three fields."""
    payload = "\x1f".join(_norm_text(t) for t in (instruction, input, output))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading JSONL with one-line errors


def str_field(obj: dict[str, Any], name: str, where: str, *, required: bool = True, nonempty: bool = False) -> str:
    """A string field of a JSONL row: missing, not a string, or (when `nonempty`) blank is a DataError."""
    if name not in obj or obj[name] is None:
        if required:
            raise DataError(f"{where}: missing field '{name}'")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    if nonempty and not value.strip():
        raise DataError(f"{where}: field '{name}' is empty")
    return value


def check_task(task: str, where: str) -> str:
    if task not in TASKS:
        raise DataError(f"{where}: field 'task' is {task!r}; expected one of {', '.join(TASKS)}")
    return task


@dataclass(frozen=True)
class Item:
    task: str
    instruction: str
    input: str
    reference: str
    hash: str

    def to_json(self) -> dict[str, str]:
        return {"task": self.task, "instruction": self.instruction, "input": self.input,
                "reference": self.reference, "hash": self.hash}


def read_set(path: str | Path, task: str | None = None) -> list[Item]:
    """Items of one set file (fields task, instruction, input, reference, hash), checked line by line.

    Repeated hashes are kept, as the seeds' sets have a few (their source had duplicates).
    """
    items = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        t = check_task(str_field(obj, "task", where, nonempty=True), where)
        if task is not None and t != task:
            raise DataError(f"{where}: field 'task' is {t!r} in a file of {task!r} items")
        items.append(Item(t, str_field(obj, "instruction", where, nonempty=True), str_field(obj, "input", where),
                          str_field(obj, "reference", where, nonempty=True), str_field(obj, "hash", where, nonempty=True)))
    if not items:
        raise DataError(f"{path}: no items")
    return items


def set_file(folder: str | Path, task: str) -> Path:
    """`<folder>/<task>.jsonl` (brlm and the shared sets) or the seeds' `canarim_extrinsic_<task>.jsonl`."""
    folder = Path(folder)
    for name in (f"{task}.jsonl", f"canarim_extrinsic_{task}.jsonl"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {task}.jsonl (nor canarim_extrinsic_{task}.jsonl)")


def read_sets(folder: str | Path, tasks: Sequence[str] = TASKS) -> dict[str, list[Item]]:
    return {t: read_set(set_file(folder, check_task(t, "--tasks")), task=t) for t in tasks}


# --------------------------------------------------------------------------------------------------
# Building


@dataclass(frozen=True)
class Source:
    lineno: int
    instruction: str
    input: str
    output: str


def read_instructions(path: str | Path) -> list[Source]:
    """Instruction rows (`instruction`, optional `input`, `output`), stripped as the seeds did."""
    rows = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        rows.append(Source(lineno, str_field(obj, "instruction", where).strip(),
                           str_field(obj, "input", where, required=False).strip(), str_field(obj, "output", where).strip()))
    return rows


def build_sets(source: str | Path, exclude: Sequence[str | Path], n: int, seed: int) -> tuple[dict[str, list[Item]], dict]:
    """Draw up to `n` items per task from `source` in seeded order; returns (sets, manifest)."""
    if n <= 0:
        raise DataError(f"--n: expected a positive number of items per task, got {n}")
    rows = read_instructions(source)
    excluded_keys: set[str] = set()
    exclude_info = []
    for path in exclude:
        train = read_instructions(path)
        excluded_keys.update(norm_hash(r.instruction, r.input, r.output) for r in train)
        exclude_info.append({"path": str(path), "sha256": file_sha256(path), "rows": len(train)})

    keys = [norm_hash(r.instruction, r.input, r.output) for r in rows]
    # numpy's PCG64 permutation: the same order as datasets' Dataset.shuffle(seed=seed), which the
    # seeds used to draw their sets from Canarim.
    order = np.random.default_rng(seed).permutation(len(rows))
    picked: dict[str, list[Item]] = {t: [] for t in TASKS}
    counts = {"scanned": 0, "excluded": 0, "duplicates": 0, "unclassified": 0, "over_quota": 0}
    seen: set[str] = set()
    for i in order:
        if all(len(v) >= n for v in picked.values()):
            break
        r, key = rows[int(i)], keys[int(i)]
        counts["scanned"] += 1
        if key in excluded_keys:
            counts["excluded"] += 1
            continue
        if key in seen:  # the seeds kept repeats of one source item; a set should not
            counts["duplicates"] += 1
            continue
        seen.add(key)
        task = classify(r.instruction, r.input, r.output)
        if task is None:
            counts["unclassified"] += 1
            continue
        if len(picked[task]) >= n:
            counts["over_quota"] += 1
            continue
        picked[task].append(Item(task, r.instruction, r.input, r.output, item_hash(r.instruction, r.input, r.output)))

    manifest = {
        "kind": "brlm.extrinsic.sets",
        "source": {"path": str(source), "sha256": file_sha256(source), "rows": len(rows)},
        "exclude": exclude_info,
        "seed": int(seed),
        "shuffle": "numpy.random.default_rng(seed).permutation(rows) (= datasets' Dataset.shuffle(seed))",
        "n_per_task_requested": int(n),
        "n_per_task_obtained": {t: len(v) for t, v in picked.items()},
        **counts,
        "excluded_in_source": sum(k in excluded_keys for k in keys),
        "exclusion_key": "sha256 of NFC + casefold + collapsed whitespace of instruction, input, output",
        "item_hash": "sha1 of 'instruction\\n---\\ninput\\n---\\noutput' (stripped fields), as the seeds",
        "classifier": CLASSIFIER,
        "hashes": {t: [it.hash for it in v] for t, v in picked.items()},
    }
    return picked, manifest


def write_sets(out: str | Path, sets: dict[str, list[Item]], manifest: dict) -> dict:
    """`<out>/<task>.jsonl` for every task and `<out>/manifest.json` (written last, with file hashes)."""
    out = Path(out)
    files = {}
    for task, items in sets.items():
        text = "".join(json.dumps(it.to_json(), ensure_ascii=False) + "\n" for it in items)
        write_text(out / f"{task}.jsonl", text)
        files[task] = {"path": f"{task}.jsonl", "sha256": file_sha256(out / f"{task}.jsonl"), "n": len(items)}
    manifest = {**manifest, "files": files}
    write_json(out / "manifest.json", manifest)
    return manifest
