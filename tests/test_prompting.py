"""Prompting helpers (brlm.infer.prompting): few-shot templates from JSONL, restrictive templates
with option extraction and restricted decoding, self-consistency votes; `brlm sample --few-shot
--self-consistency --options` on a tiny run with fixed seeds."""

from __future__ import annotations

import json

import pytest
import torch

from brlm.errors import BrlmError
from brlm.infer.engine import generate
from brlm.infer.load import load_model
from brlm.infer.prompting import (
    Example,
    build_prompt,
    extract_answer,
    extract_option,
    majority_vote,
    option_constraint,
    parse_options,
    read_examples,
    self_consistency,
)
from brlm.infer.sampling import make_sampler
from tests.conftest import run_cli
from tests.serving_helpers import make_run, train_tokenizer_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompting")
    return make_run(root, train_tokenizer_dir(root / "tok"), noise=0.3)


@pytest.fixture
def examples_file(tmp_path):
    p = tmp_path / "ex.jsonl"
    rows = [{"input": "A água é molhada?", "output": "sim"}, {"input": "O fogo é frio?", "output": "não"},
            {"instruction": "Responda com sim ou não.", "input": "", "output": "sim"}]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    return p


def test_few_shot_and_restrictive_template(examples_file):
    ex = read_examples(examples_file)
    assert ex[2] == Example("", "sim", "Responda com sim ou não.")
    assert build_prompt(ex[:2], "O céu é azul?") == (
        "Entrada: A água é molhada?\nResposta: sim\n\nEntrada: O fogo é frio?\nResposta: não\n\n"
        "Entrada: O céu é azul?\nResposta:")
    assert build_prompt(ex[2:], "O céu é azul?", instruction="Seja breve.", options=["sim", "não"]) == (
        "Responda apenas com uma destas opções: sim, não.\n\n"
        "Instrução: Responda com sim ou não.\nResposta: sim\n\n"
        "Instrução: Seja breve.\nEntrada: O céu é azul?\nResposta:")


@pytest.mark.parametrize("content, msg", [
    ('{"input": "x"}', "expected string fields"),
    ('{"input": "x", "output": 3}', "expected string fields"),
    ('{"output": "y"}', "expected string fields"),
    ("", "no examples"),
    ("{nope", "not valid JSON"),
])
def test_bad_examples_name_the_line(content, msg, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"input": "a", "output": "b"}\n' + content + "\n" if content else "", encoding="utf-8")
    with pytest.raises(BrlmError, match=msg):
        read_examples(p)


def test_options_and_answers_are_extracted():
    opts = ["sim", "não", "não sei"]
    assert extract_option(" Não.", opts) == "não"
    assert extract_option("SIM, claro\nnão", opts) == "sim"  # first line only
    assert extract_option("nao sei dizer", opts) == "não sei"  # accents ignored; longest at the same place
    assert extract_option("talvez, simples", opts) is None  # whole words only
    assert extract_option("\n\n acho que sim", opts) == "sim"
    assert extract_answer("  Brasília.\nOutra linha") == "Brasília" and extract_answer(" \n") is None
    assert parse_options(" sim , não ") == ["sim", "não"]
    for bad in ("sim", "sim,Sim.", "sim,sim"):
        with pytest.raises(BrlmError, match="--options"):
            parse_options(bad)


def test_majority_vote_and_agreement():
    v = majority_vote(["Sim.", None, "não", "sim", "não"])
    assert v["answer"] == "Sim." and v["votes"] == {"Sim.": 2, "não": 2}  # tie: the earliest first vote wins
    assert (v["n"], v["valid"], v["agreement"]) == (5, 4, 0.4)
    assert majority_vote([None, None])["answer"] is None
    texts = {10: "sim", 11: "Não!", 12: "não", 13: "nao", 14: "sim"}
    calls = []
    r = self_consistency(lambda seed: calls.append(seed) or texts[seed], range(10, 15),
                         lambda t: extract_option(t, ["sim", "não"]))
    assert calls == [10, 11, 12, 13, 14]
    assert r["answer"] == "não" and r["agreement"] == 0.6 and r["votes"] == {"sim": 2, "não": 3}
    assert [s["answer"] for s in r["samples"]] == ["sim", "não", "não", "não", "sim"]


def test_restricted_decoding_only_produces_options(run):
    lm = load_model(run)
    tok = lm.tokenizer
    options = ["sim", "não", "não sei", "talvez"]
    prompt = tok.encode(build_prompt([], "O céu é azul?", options=options))
    seen = set()
    for seed in range(12):
        sampler, stop = option_constraint(make_sampler(1.5), tok, options)
        ids, info = generate(lm.model, prompt, 20, sampler, generator=torch.Generator().manual_seed(seed),
                             eos_id=tok.eos_id, stop=stop)
        text = tok.decode(ids).strip()
        assert text in options, (seed, text)
        assert extract_option(text, options) == text
        seen.add(text)
    assert len(seen) >= 2  # a hot sampler still explores among the options


def test_cli_few_shot_self_consistency(run, examples_file, tmp_path):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    args = ["sample", str(run), "--prompt", "O céu é azul?", "--prompt", "A neve é quente?", "--few-shot",
            str(examples_file), "--self-consistency", "5", "--options", "sim,não", "--temperature", "1.2"]
    p1 = run_cli(*args, "--out", str(out1), check=True)
    run_cli(*args, "--out", str(out2), check=True)
    r1, r2 = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert r1["results"] == r2["results"]  # fixed seeds: the same votes every time
    assert p1.stdout.count("resposta: ") == 2
    for row in r1["results"]:
        assert row["n"] == 5 and row["valid"] == 5 and row["answer"] in ("sim", "não")
        assert row["agreement"] == max(row["votes"].values()) / 5
        assert [s["seed"] for s in row["samples"]] == [1234 + i for i in range(5)]
        assert row["prompt"].startswith("Responda apenas com uma destas opções: sim, não.\n\nEntrada: A água")
    free = run_cli("sample", str(run), "--prompt", "O céu é azul?", "--self-consistency", "2", "--max-new-tokens", "5",
                   "--out", str(tmp_path / "c.json"), check=True)
    assert "resposta:" in free.stdout
    bad = run_cli("sample", str(run), "--few-shot", str(examples_file))
    assert bad.returncode == 2 and "--prompt" in bad.stderr and bad.stderr.strip().count("\n") == 0
