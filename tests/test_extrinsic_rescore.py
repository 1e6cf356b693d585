"""Rescoring saved outputs: the seeds' per-item format (their scoring reproduced exactly, the leaked
prompt repaired) and brlm's own details format; one-line errors on bad details files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brlm.errors import BrlmError
from brlm.eval.extrinsic.rescore import detail_row, paired_scores, repair_leak, rescore_file
from brlm.eval.extrinsic.tasks import Item
from brlm.verbs.extrinsic import main

LLAMA3_PREAMBLE = "system\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nuser\n\n"

# Two items as the seeds' evaluation wrote them: outputs carry the leaked prompt tail + "assistant".
# Stored metrics computed by hand with the seeds' scoring (see the comments).
SEEDS_ROWS = [
    {"task": "qa", "hash": "h1", "instruction": "É verdade que o céu é azul?", "input": "", "reference": "Sim, é verdade.",
     "base_output": LLAMA3_PREAMBLE + "É verdade que o céu é azul?assistant\n\nSim, é verdade que o céu é azul.",
     "sft_output": LLAMA3_PREAMBLE + "É verdade que o céu é azul?assistant\n\nSim, é verdade.",
     # first lines are "system": nothing in common with "sim  e verdade"
     "metrics": {"base": {"em": 0.0, "f1": 0.0}, "sft": {"em": 0.0, "f1": 0.0}}},
    {"task": "rewriting", "hash": "h2", "instruction": "Reescreva na voz ativa.", "input": "O gato foi comido pelo cão.",
     "reference": "O cão comeu o gato.",
     "base_output": "comido pelo cão.assistant\n\nO cão comeu o gato.",
     "sft_output": "O cão comeu o gato.",
     # base: LCS 5 of [comido pelo cao assistant o cao comeu o gato] (9) and the reference (5): F = 10/14
     "metrics": {"base": {"rouge_l_f1": 10 / 14}, "sft": {"rouge_l_f1": 1.0}}},
]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_seeds_compat_reproduces_their_stored_metrics(tmp_path):
    r = rescore_file(_write(tmp_path / "d.jsonl", SEEDS_ROWS), compat="seeds")
    assert r.format == "seeds" and r.stored_mismatches == 0
    assert r.table["qa"]["base"] == {"em": 0.0, "f1": 0.0, "rouge_l": r.table["qa"]["base"]["rouge_l"], "n": 1}
    assert r.table["rewriting"]["base"]["rouge_l"] == pytest.approx(10 / 14)
    tampered = [SEEDS_ROWS[0], {**SEEDS_ROWS[1], "metrics": {"base": {"rouge_l_f1": 0.5}, "sft": {"rouge_l_f1": 1.0}}}]
    assert rescore_file(_write(tmp_path / "t.jsonl", tampered), compat="seeds").stored_mismatches == 1


def test_repair_leak_on_seeds_details(tmp_path):
    path = _write(tmp_path / "d.jsonl", SEEDS_ROWS)
    r = rescore_file(path, compat="seeds", repair=True)
    assert r.repaired == {"base": 2, "sft": 1} and r.stored_mismatches is None
    assert r.table["qa"]["sft"]["em"] == 1.0
    assert r.table["qa"]["base"]["f1"] == pytest.approx(6 / 11)           # 3 of 8 tokens ("o" stays), recall 1
    assert r.table["rewriting"]["base"]["rouge_l"] == 1.0
    fixed = rescore_file(path, repair=True)                                # and brlm's normaliser
    assert fixed.table["qa"]["base"]["f1"] == pytest.approx(0.6)           # 3 of 7 tokens ("o" removed)
    assert paired_scores(fixed, "qa", "base", "sft", "f1") == ([pytest.approx(0.6)], [1.0])


@pytest.mark.parametrize("output, prompt, expected", [
    ("assistant\n\nOlá", "Diga olá.", ("Olá", True)),                                    # only the header leaked
    (LLAMA3_PREAMBLE[6:] + "Diga olá.assistant\n\nOlá", "Diga olá.", ("Olá", True)),    # from mid-preamble
    ("olá.assistant", "Diga olá.", ("", True)),                                         # nothing generated
    ("Resposta: O filme", "Qual filme?", ("Resposta: O filme", False)),                 # no leak
    ("O assistant do gerente chegou", "Quem chegou?", ("O assistant do gerente chegou", False)),
    # decoding cleaned " ..." and " '" up: compared without whitespace
    ("framboesa... porque 'sim'.assistant\n\n1", "sabor de framboesa ... porque 'sim'.", ("1", True)),
    ("\ufffddo de teste.assistant\n\nnão", "conteúdo de teste.", ("não", True)),       # a split multi-byte character
    ("<|start_header_id|>assistant<|end_header_id|>\n\nOi", "Oi?<|eot_id|>", ("Oi", True)),
    ("de teste<|im_end|>\n<|im_start|>assistant\nOi", "um pedido de teste", ("Oi", True)),
])
def test_repair_leak_cases(output, prompt, expected):
    assert repair_leak(output, prompt) == expected


def test_brlm_details_format(tmp_path, capsys):
    item_a = Item("qa", "Qual é a capital do Brasil?", "", "Brasília", "ha")
    item_b = Item("summarization", "Resuma.", "Um texto longo.", "Texto curto.", "hb")
    rows = [
        detail_row(item_a, "tiny-base", "<s>Qual é a capital do Brasil?\nResposta:", "A capital é Brasília.\nOutra linha"),
        detail_row(item_a, "tiny-sft", "<s>Qual é a capital do Brasil?\nResposta:", "Brasília"),
        detail_row(item_b, "tiny-base", "Resuma.", "Nada."),
        detail_row(item_b, "tiny-sft", "Resuma.", "Texto curto."),
    ]
    assert rows[0]["answer"] == "A capital é Brasília." and set(rows[0]["metrics"]) == {"em", "f1", "rouge_l", "chrf"}
    path = _write(tmp_path / "details.jsonl", rows)
    assert main(["rescore", str(path), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == {"qa", "summarization"} and set(table["qa"]) == {"tiny-base", "tiny-sft"}
    assert set(table["qa"]["tiny-sft"]) == {"em", "f1", "rouge_l", "n"}
    assert table["qa"]["tiny-sft"]["em"] == 1.0 and table["qa"]["tiny-base"]["em"] == 0.0
    assert table["qa"]["tiny-base"]["f1"] == pytest.approx(2 * (1 / 3) / (4 / 3))      # capital é brasília vs brasília
    assert main(["rescore", str(path)]) == 0                                           # the human table
    out = capsys.readouterr().out
    assert "ROUGE-L" in out and "tiny-sft" in out


@pytest.mark.parametrize("rows, message", [
    ([{k: v for k, v in SEEDS_ROWS[0].items() if k != "sft_output"}], r":1: missing field 'sft_output'"),
    ([{**SEEDS_ROWS[0], "metrics": [0.1]}], r":1: field 'metrics' must be an object"),
    ([{**SEEDS_ROWS[0], "reference": ""}], r":1: field 'reference' is empty"),
    ([{**SEEDS_ROWS[0], "task": "traducao"}], r":1: field 'task' is 'traducao'"),
    ([SEEDS_ROWS[0], "{broken"], r":2: not valid JSON"),
    ([SEEDS_ROWS[0], {"task": "qa", "hash": "x", "model": "m", "prompt": "p", "raw_output": "o", "reference": "r"}],
     r":2: a line in the brlm format in a file of seeds lines"),
    ([{"task": "qa", "hash": "x", "model": "m", "prompt": "p", "reference": "r"}], r":1: missing field 'raw_output'"),
    ([{"task": "qa", "hash": "x", "model": "m", "prompt": "p", "raw_output": "o", "reference": "r",
       "assistant_header": "(("}], r":1: field 'assistant_header' is not a regular expression"),
])
def test_bad_details_are_one_line_errors(tmp_path, rows, message):
    path = _write(tmp_path / "d.jsonl", rows)
    with pytest.raises(BrlmError, match=message) as e:
        main(["rescore", str(path)])
    assert "\n" not in str(e.value)


def test_module_entry_point_exit_2(tmp_path):
    path = _write(tmp_path / "d.jsonl", ["{broken"])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "brlm.verbs.extrinsic", "rescore", str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not valid JSON" in proc.stderr


def test_brlm_eval_extrinsic_rescore_through_the_cli(tmp_path):
    """`brlm eval extrinsic rescore FILE --json` through the real CLI: one JSON object on stdout;
    a broken line is one error line and exit code 2."""
    from tests.conftest import run_cli

    item = Item("qa", "Qual é a capital do Brasil?", "", "Brasília", "ha")
    details = tmp_path / "details.jsonl"
    details.write_text(json.dumps(detail_row(item, "m", "P:", "Brasília\nmais texto")) + "\n", encoding="utf-8")
    proc = run_cli("eval", "extrinsic", "rescore", str(details), "--json", check=True)
    out = json.loads(proc.stdout)
    assert out["qa"]["m"]["em"] == 1.0 and out["qa"]["m"]["n"] == 1
    details.write_text("{quebrado\n", encoding="utf-8")
    bad = run_cli("eval", "extrinsic", "rescore", str(details), "--json")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "details.jsonl:1" in bad.stderr
