"""Task sets: the classifier, building with exclusion, reading sets, and one-line errors on bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from brlm.errors import BrlmError
from brlm.eval.extrinsic.tasks import build_sets, classify, item_hash, read_set, read_sets, write_sets
from brlm.verbs.extrinsic import main

LONG_INPUT = " ".join(["O conselho da cidade votou para proibir a venda de peles dentro de seus limites."] * 10)  # 150 words
SUMMARY_30 = " ".join(["A cidade proibiu a venda de peles."] * 5)                                                  # 35 words
SENTENCE_25 = "O gato foi comido pelo cachorro ontem à noite no quintal da casa amarela perto da praça onde as crianças brincam todos os dias depois da escola"


@pytest.mark.parametrize("instruction, input, output, task", [
    ("Qual é a capital do Brasil?", "", "Brasília", "qa"),
    ("Escolha a opção correta.", "(A) azul (B) verde", "B", "qa"),
    ("Resuma o texto abaixo.", "Um texto qualquer.", "Texto.", "summarization"),
    ("Forneça uma síntese.", "Texto.", "Um resumo.", "summarization"),
    ("Escreva algo sobre isto.", LONG_INPUT, SUMMARY_30, "summarization"),          # long input, shorter output
    ("Reescreva a frase na voz ativa.", "O gato foi comido pelo cão.", "O cão comeu o gato.", "rewriting"),
    ("Traduza para o inglês.", SENTENCE_25, SENTENCE_25.upper(), "rewriting"),     # similar lengths
    ("Conte uma piada.", "", "Um " * 40, None),
    ("Qual é a capital?", "", "", None),                                          # no output
    ("Fale resumidamente sobre gatos.", "", "Gatos são felinos domésticos muito populares em todo o mundo e vivem bem em apartamentos pequenos com pessoas", None),
    ("Resuma: qual é a cor do céu?", "", "Azul", "qa"),                          # QA comes first
])
def test_classifier(instruction, input, output, task):
    assert classify(instruction, input, output) == task


def test_item_hash_is_the_seeds_formula():
    assert item_hash("Pergunta?", "", "Sim") == hashlib.sha1(b"Pergunta?\n---\n\n---\nSim").hexdigest()


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def _qa(i: int) -> dict:
    return {"instruction": f"Quanto é {i} mais {i}?", "input": "", "output": str(2 * i)}


def test_build_excludes_training_items(tmp_path):
    source = [_qa(i) for i in range(12)]
    source.append(_qa(3))                                                                  # a repeat in the source
    source.append({"instruction": "Reescreva.", "input": "O gato foi comido.", "output": "O cão comeu o gato."})
    train = [_qa(0), _qa(1), {"instruction": "  QUANTO é 2 mais 2? ", "input": None, "output": "4"},  # case/spaces
             {"instruction": "Outra coisa?", "input": "", "output": "x"}]
    src, tr = _write_jsonl(tmp_path / "src.jsonl", source), _write_jsonl(tmp_path / "train.jsonl", train)
    sets, manifest = build_sets(src, [tr], n=5, seed=123)
    assert manifest["excluded_in_source"] == 3
    assert manifest["n_per_task_obtained"] == {"qa": 5, "summarization": 0, "rewriting": 1}
    picked = {it.instruction for it in sets["qa"]}
    assert not picked & {"Quanto é 0 mais 0?", "Quanto é 1 mais 1?", "Quanto é 2 mais 2?"}
    assert len(picked) == 5
    assert manifest["scanned"] == manifest["excluded"] + manifest["duplicates"] + manifest["unclassified"] + \
        manifest["over_quota"] + sum(manifest["n_per_task_obtained"].values())
    assert manifest["hashes"]["qa"] == [it.hash for it in sets["qa"]]
    again, _ = build_sets(src, [tr], n=5, seed=123)
    other, _ = build_sets(src, [tr], n=5, seed=456)
    assert again == sets and [i.hash for i in other["qa"]] != [i.hash for i in sets["qa"]]

    out = tmp_path / "sets"
    written = write_sets(out, sets, manifest)
    assert set(written["files"]) == {"qa", "summarization", "rewriting"}
    back = read_set(out / "qa.jsonl", task="qa")
    assert back == sets["qa"]
    assert json.loads((out / "manifest.json").read_text())["files"]["qa"]["n"] == 5
    with pytest.raises(BrlmError, match="no items"):
        read_sets(out)                                                                     # summarization.jsonl is empty


def test_build_cli(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "src.jsonl", [_qa(i) for i in range(8)])
    tr = _write_jsonl(tmp_path / "train.jsonl", [_qa(0)])
    assert main(["build", "--from", str(src), "--exclude", str(tr), "--n", "3", "--seed", "1", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "excluded 1" in err and "qa 3" in err
    assert len(read_set(tmp_path / "o" / "qa.jsonl")) == 3
    with pytest.raises(BrlmError, match="--n"):
        main(["build", "--from", str(src), "--n", "0", "--out", str(tmp_path / "p")])
    with pytest.raises(BrlmError, match="no such file"):
        main(["build", "--from", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit) as e:
        main(["build", "--help"])
    assert e.value.code == 0


GOOD = {"task": "qa", "instruction": "Qual?", "input": "", "reference": "Sim", "hash": "abc"}


@pytest.mark.parametrize("rows, message", [
    ([GOOD, '{"task": "qa", "instruction": '], r":2: not valid JSON"),
    ([{k: v for k, v in GOOD.items() if k != "reference"}], r":1: missing field 'reference'"),
    ([GOOD, {**GOOD, "reference": "  "}], r":2: field 'reference' is empty"),
    ([{**GOOD, "task": "translation"}], r":1: field 'task' is 'translation'; expected one of qa, summarization, rewriting"),
    ([{**GOOD, "hash": 12}], r":1: field 'hash' must be a string"),
    (['["a list"]'], r":1: expected a JSON object"),
    ([], r"no items"),
])
def test_bad_set_files_are_one_line_errors(tmp_path, rows, message):
    path = _write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(BrlmError, match=message) as e:
        read_set(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_set_of_another_task(tmp_path):
    _write_jsonl(tmp_path / "qa.jsonl", [{**GOOD, "task": "rewriting"}])
    with pytest.raises(BrlmError, match="in a file of 'qa' items"):
        read_sets(tmp_path, tasks=["qa"])
