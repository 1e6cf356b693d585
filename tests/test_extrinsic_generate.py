"""Batched generation for the extrinsic evaluation (brlm.eval.extrinsic.generate): a left-padded
batch of prompts of different lengths gives exactly the unbatched answers, and the seeds' slicing
(`out[i, attention_mask[i].sum():]`) would not; prompts are cut from the left with a count;
the prompt format is the chat template when there is one."""

from __future__ import annotations

import pytest

from brlm.eval.extrinsic.generate import encode_prompt, generate_answers, hf_generate_padded, plan_lengths
from brlm.eval.extrinsic.prompts import prompt_format, render_prompt
from brlm.eval.extrinsic.tasks import Item
from brlm.infer.load import load_model

from .extrinsic_models import QUESTIONS, make_brlm_run, make_hf_folder, make_tokenizer_dir

transformers = pytest.importorskip("transformers", reason="needs pip install 'brlm[hf]' (transformers)")

SHORT = ["Qual é a capital?", "Quem venceu o clássico de domingo?", "Onde começa a vacinação contra a gripe?",
         "O que a prefeitura prometeu concluir até o fim de março?"]
PROMPTS = [f"<|usuario|>\n{q}\n<|assistente|>\n" for q in SHORT]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    tok = make_tokenizer_dir(root / "tok")
    return {"hf": load_model(make_hf_folder(root / "hf", tok)), "run": load_model(make_brlm_run(root / "run", tok))}


def _answers(lm, prompts, max_new, batch_size):
    got = dict(generate_answers(lm, prompts, max_new, batch_size))
    return [got[i] for i in range(len(prompts))]


@pytest.mark.parametrize("kind", ["hf", "run"])
def test_batched_equals_unbatched(models, kind):
    lm = models[kind]
    lengths = {len(lm.tokenizer.encode(p)) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS), "the prompts must have different lengths for the test to mean anything"
    assert max(lengths) <= plan_lengths(lm, 12)[0], "and fit the context uncut"
    one = _answers(lm, PROMPTS, 12, batch_size=1)
    batched = _answers(lm, PROMPTS, 12, batch_size=len(PROMPTS))
    assert [g.text for g in batched] == [g.text for g in one]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in one]
    assert len({g.text for g in one}) > 1 and all(g.new_tokens > 0 for g in one)


def test_seeds_slicing_fails_the_same_check(models):
    """The same padded batch, cut at attention_mask[i].sum() as the seeds did: every padded row's
    "answer" starts inside the padding / prompt, so it differs from the unbatched answer."""
    lm = models["hf"]
    budget, _ = plan_lengths(lm, 12)
    ids = [encode_prompt(lm, p, budget)[0] for p in PROMPTS]  # as generate_answers cuts them
    one = [g.text for g in _answers(lm, PROMPTS, 12, batch_size=1)]
    out, input_ids, mask = hf_generate_padded(lm, ids, 12)
    eos = lm.tokenizer.eos_id

    def text(row: list[int]) -> str:
        return lm.tokenizer.decode(row[:row.index(eos)] if eos in row else row)

    ours = [text(out[i, input_ids.shape[1]:].tolist()) for i in range(len(ids))]
    seeds = [text(out[i, int(mask[i].sum()):].tolist()) for i in range(len(ids))]
    padded = [i for i in range(len(ids)) if mask[i].sum() < input_ids.shape[1]]
    assert ours == one
    assert len(padded) == len(ids) - 1 and all(seeds[i] != one[i] for i in padded)


def test_prompts_cut_from_the_left_with_a_count(models):
    lm = models["run"]
    budget, new = plan_lengths(lm, 1000)
    assert new == lm.model.block_size // 2 and budget == lm.model.block_size - new
    long_prompt = " ".join(QUESTIONS * 6)
    (i, g), = list(generate_answers(lm, [long_prompt], 1000, batch_size=1))
    assert g.prompt_tokens == budget and g.truncated == len(lm.tokenizer.encode(long_prompt)) - budget > 0


def test_prompt_format_chat_template_or_plain(models):
    item = Item("qa", "Qual é a capital?", "Texto de apoio.", "Brasília", "h")
    hf, run = models["hf"], models["run"]
    assert prompt_format(hf) == "chat" and prompt_format(run) == "plain"
    chat = render_prompt(hf, item, "chat")
    assert chat == "<|usuario|>\nQual é a capital?\n\nEntrada:\nTexto de apoio.\n<|assistente|>\n"
    assert render_prompt(run, item, "chat") == chat  # brlm's own template, rendered without transformers
    assert render_prompt(run, item, "plain") == "Instrução:\nQual é a capital?\n\nEntrada:\nTexto de apoio.\n\nResposta:\n"
    assert render_prompt(hf, item, "chat", system="Seja breve.").startswith("<|sistema|>\nSeja breve.\n<|usuario|>")
