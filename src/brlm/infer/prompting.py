"""Prompting without training (the textbook's chapter on prompts): few-shot templates from a JSONL
of examples, restrictive templates (answer with one of the given options only) and
self-consistency (several sampled answers, majority vote, agreement reported).

    from brlm.infer.prompting import build_prompt, read_examples, self_consistency
    examples = read_examples("exemplos.jsonl")        # {"input", "output"} or {"instruction", "input", "output"}
    prompt = build_prompt(examples, "O céu é azul?", options=["sim", "não"])
    result = self_consistency(lambda seed: sample_text(prompt, seed), seeds=range(5),
                              extract=lambda text: extract_option(text, ["sim", "não"]))
    result["answer"], result["agreement"]             # e.g. "sim", 0.8

    brlm sample runs/demo --prompt "O céu é azul?" --few-shot ex.jsonl --self-consistency 5 --options "sim,não"

Template (Portuguese labels; one blank line between blocks; the prompt ends right after
"Resposta:", so the answer starts with a space, as it does in the examples):

    Responda apenas com uma destas opções: sim, não.      <- restrictive, with options

    Instrução: Diga se a frase é verdadeira.              <- only when the example has one
    Entrada: A água ferve a 100 °C ao nível do mar.
    Resposta: sim

    Entrada: O céu é azul?
    Resposta:

With options the answer is also *decoded* under the restriction (`option_constraint`): at each
step only tokens that continue some option's ids are allowed, so even a small model answers with
an option; `extract_option` reads it back (and reads free answers when decoding was not
constrained). Self-consistency follows Wang et al. 2023 (arXiv:2203.11171): sample with different
seeds, extract each answer, keep the most frequent; the agreement ratio (votes / samples) is a
cheap confidence figure.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from brlm.errors import BrlmError
from brlm.io.files import iter_jsonl

LABELS = {"instruction": "Instrução", "input": "Entrada", "output": "Resposta"}
# Where a generated answer ends: the model starts the next block of the template.
ANSWER_STOPS = ["\n\n", f"\n{LABELS['input']}:", f"\n{LABELS['instruction']}:"]


@dataclass
class Example:
    input: str
    output: str
    instruction: str = ""


def read_examples(path: str | Path) -> list[Example]:
    """Examples from a JSONL file: each line {"input", "output"} or {"instruction", "input", "output"}
    (input may be empty when there is an instruction)."""
    path = Path(path)
    if not path.is_file():
        raise BrlmError(f"--few-shot {path}: file not found")
    out = []
    for lineno, row in iter_jsonl(path):
        bad = [k for k in ("instruction", "input", "output") if k in row and not isinstance(row[k], str)]
        if bad or "output" not in row or not (row.get("input") or row.get("instruction")):
            raise BrlmError(f"{path}:{lineno}: expected string fields input/output or instruction/input/output "
                            f"(got {sorted(row)})")
        out.append(Example(row.get("input", ""), row["output"], row.get("instruction", "")))
    if not out:
        raise BrlmError(f"--few-shot {path}: no examples")
    return out


def restrict_instruction(options: list[str]) -> str:
    return f"Responda apenas com uma destas opções: {', '.join(options)}."


def format_block(ex: Example, with_output: bool = True) -> str:
    lines = [f"{LABELS['instruction']}: {ex.instruction}"] if ex.instruction else []
    if ex.input:
        lines.append(f"{LABELS['input']}: {ex.input}")
    lines.append(f"{LABELS['output']}: {ex.output}" if with_output else f"{LABELS['output']}:")
    return "\n".join(lines)


def build_prompt(examples: list[Example], query: str, instruction: str = "", options: list[str] | None = None) -> str:
    """The few-shot (and, with options, restrictive) prompt for `query`, ending with "Resposta:"."""
    blocks = [restrict_instruction(options)] if options else []
    blocks += [format_block(ex) for ex in examples]
    blocks.append(format_block(Example(query, "", instruction), with_output=False))
    return "\n\n".join(blocks)


def parse_options(spec: str) -> list[str]:
    """'sim,não' -> ['sim', 'não']; at least two distinct options."""
    options = [o.strip() for o in spec.split(",") if o.strip()]
    if len({normalize_answer(o) for o in options}) < 2 or len(set(options)) != len(options):
        raise BrlmError(f"--options {spec!r}: expected at least two distinct comma-separated options, e.g. 'sim,não'")
    return options


# ---------------------------------------------------------------------------------------------
# Answers


def normalize_answer(text: str) -> str:
    """The form answers are compared in: lower case, no accents, inner spaces collapsed, no
    punctuation at the ends ("Não." == "nao")."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"\s+", " ", text).strip(" \t\n.,;:!?\"'()[]")


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def extract_answer(text: str) -> str | None:
    """A free answer: the first non-empty line, without end punctuation (None when empty)."""
    line = first_line(text).strip(" .;:!?\"'")
    return line or None


def extract_option(text: str, options: list[str]) -> str | None:
    """The option the answer chose: the earliest option found as whole words in its first line
    (accents and case ignored; the longest wins at the same position); None if there is none."""
    line = f" {normalize_answer(first_line(text))} "
    best: tuple[int, int, str] | None = None
    for opt in options:
        m = re.search(rf"(?<!\w){re.escape(normalize_answer(opt))}(?!\w)", line)
        if m and (best is None or (m.start(), -len(opt)) < (best[0], best[1])):
            best = (m.start(), -len(opt), opt)
    return best[2] if best else None


def majority_vote(answers: list[str | None]) -> dict[str, Any]:
    """The most frequent answer (compared normalised; shown as first written); a tie goes to the
    answer that got its first vote earliest. None (no answer extracted) never wins but counts in n."""
    counts: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for a in answers:
        if a is None:
            continue
        key = normalize_answer(a)
        counts[key] += 1
        shown.setdefault(key, a)
    n = len(answers)
    if not counts:
        return {"answer": None, "votes": {}, "agreement": 0.0, "n": n, "valid": 0}
    order = list(shown)  # first-vote order
    top = max(counts.values())
    winner = next(k for k in order if counts[k] == top)
    return {"answer": shown[winner], "votes": {shown[k]: counts[k] for k in order}, "agreement": top / n if n else 0.0,
            "n": n, "valid": sum(counts.values())}


def self_consistency(sample: Callable[[int], str], seeds: Iterable[int],
                     extract: Callable[[str], str | None] = extract_answer) -> dict[str, Any]:
    """Sample once per seed, extract each answer, vote. `sample(seed) -> completion text`."""
    rows = []
    for seed in seeds:
        text = sample(int(seed))
        rows.append({"seed": int(seed), "completion": text, "answer": extract(text)})
    return {**majority_vote([r["answer"] for r in rows]), "samples": rows}


# ---------------------------------------------------------------------------------------------
# Restricted decoding


def option_constraint(sampler: Callable[..., torch.Tensor], tokenizer: Any, options: list[str]
                      ) -> tuple[Callable[..., torch.Tensor], Callable[[list[int]], str | None]]:
    """(sampler, stop) for one generation that can only produce one of `options` (each encoded
    after a space, as it follows "Resposta:"). The sampler masks every token that does not continue
    some option; the stop ends the generation once an option is complete (when a longer option
    also continues it, eos stays allowed to choose the short one). Make a new pair per generation."""
    seqs = [tokenizer.encode(" " + o) for o in options]
    eos = getattr(tokenizer, "eos_id", -1)
    state: dict[str, int] = {}

    def allowed(done: list[int]) -> set[int]:
        nxt = {s[len(done)] for s in seqs if len(s) > len(done) and s[: len(done)] == done}
        if done in seqs and eos is not None and eos >= 0:
            nxt.add(eos)
        return nxt

    def constrained(logits: torch.Tensor, generator: torch.Generator | None = None,
                    history: torch.Tensor | None = None) -> torch.Tensor:
        if history is None:
            raise BrlmError("option_constraint needs the engine to pass the ids so far (history)")
        start = state.setdefault("prompt_len", history.size(1))  # the first call sees the prompt only
        done = history[0, start:].tolist()
        keep = torch.tensor(sorted(allowed(done)) or [eos], dtype=torch.long, device=logits.device)
        masked = torch.full_like(logits, float("-inf"))
        masked[:, keep] = logits[:, keep]
        return sampler(masked, generator, history)

    def stop(new_ids: list[int]) -> str | None:
        if new_ids in seqs and not any(len(s) > len(new_ids) and s[: len(new_ids)] == new_ids for s in seqs):
            return "option complete"
        return None

    return constrained, stop
