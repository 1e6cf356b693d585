"""Post-training data (brlm.posttrain.data): which positions carry labels, what is dropped and
counted, and packing that never lets one example attend to another."""

from __future__ import annotations

import pytest
import torch

from brlm.config.posttrain import FinetuneConfig, PairsConfig
from brlm.errors import DataError
from brlm.posttrain import data as pdata
from tests.posttrain_helpers import INSTRUCTIONS, make_hf_base, write_jsonl

transformers = pytest.importorskip("transformers", reason="post-training needs transformers (pip install 'brlm[hf]')")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_hf_base(tmp_path_factory.mktemp("pt") / "base")


@pytest.fixture(scope="module")
def plain_base(tmp_path_factory):
    return make_hf_base(tmp_path_factory.mktemp("pt") / "plain", chat_template=False)


@pytest.fixture(scope="module")
def tok(base):
    from brlm.posttrain.model import load_tokenizer

    return load_tokenizer(base)


def test_response_only_labels_count_exactly(tok):
    """Chat format: exactly the answer's tokens and its end-of-turn token are targets, each at the
    position before it; nothing of the prompt, nothing after the eos."""
    f = pdata.Formatter(tok)
    record = INSTRUCTIONS[1]
    messages = pdata.record_messages(record, "instruction", PairsConfig(), "t")
    segments = f.segments(messages, "instruction", "t")
    assert [learned for _, learned in segments] == [False, True, False]
    prompt_ids, answer_ids, tail_ids = (f.encode(text) for text, _ in segments)
    assert tail_ids == f.encode("\n") and answer_ids[-1] == tok.eos_token_id
    ex = pdata.sft_example(record, "instruction", FinetuneConfig(seq_len=512), PairsConfig(), f, pdata.DataCounts(), "t")
    assert ex.input_ids == prompt_ids + answer_ids + tail_ids
    labelled = [t for t, y in enumerate(ex.targets) if y != pdata.IGNORE]
    n_prompt = len(prompt_ids)
    # Position t predicts token t + 1: the last prompt token predicts the first answer token.
    assert labelled == list(range(n_prompt - 1, n_prompt - 1 + len(answer_ids)))
    assert [ex.targets[t] for t in labelled] == answer_ids
    assert ex.n_labels == len(answer_ids)


def test_plain_format_without_chat_template(plain_base):
    from brlm.posttrain.model import load_tokenizer

    tok = load_tokenizer(plain_base)
    f = pdata.Formatter(tok)  # template auto -> plain
    assert not f.chat
    ex = pdata.sft_example(INSTRUCTIONS[0], "instruction", FinetuneConfig(seq_len=512), PairsConfig(), f, pdata.DataCounts(), "t")
    answer = f.encode(INSTRUCTIONS[0]["output"]) + [tok.eos_token_id]
    assert ex.n_labels == len(answer)
    assert [y for y in ex.targets if y != pdata.IGNORE] == answer
    text = tok.decode(ex.input_ids)
    assert "### Instrução:" in text and "### Resposta:" in text


def test_messages_need_a_chat_template(plain_base, tmp_path):
    from brlm.posttrain.model import load_tokenizer

    f = pdata.Formatter(load_tokenizer(plain_base))
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Oi"}, {"role": "assistant", "content": "Olá!"}]}])
    with pytest.raises(DataError, match="no chat template") as e:
        pdata.load_pair_split(path, FinetuneConfig(), PairsConfig(), f, pdata.DataCounts())
    assert "\n" not in str(e.value)


def test_multi_turn_messages_learn_every_assistant_turn(tok):
    f = pdata.Formatter(tok)
    msgs = [{"role": "system", "content": "Responda em uma frase."}, {"role": "user", "content": "Oi"},
            {"role": "assistant", "content": "Olá!"}, {"role": "user", "content": "Tudo bem?"},
            {"role": "assistant", "content": "Tudo ótimo."}]
    segments = f.segments(msgs, "messages", "t")
    learned = [text for text, is_learned in segments if is_learned]
    assert learned == [f"Olá!{tok.eos_token}", f"Tudo ótimo.{tok.eos_token}"]
    assert "".join(text for text, _ in segments) == tok.apply_chat_template(msgs, tokenize=False)


def test_bad_records_are_one_line_errors_or_counts(tok, tmp_path):
    f = pdata.Formatter(tok)
    pc = PairsConfig()
    n0 = len(pdata.sft_example(INSTRUCTIONS[0], "instruction", FinetuneConfig(seq_len=512), pc, f, pdata.DataCounts(), "t"))
    seq_len = n0 + 2  # the first record fits; the long answer and the long prompt do not
    fc = FinetuneConfig(seq_len=seq_len, too_long="truncate")
    missing = write_jsonl(tmp_path / "missing.jsonl", [INSTRUCTIONS[0], {"instruction": "Sem resposta"}])
    with pytest.raises(DataError, match=r"missing\.jsonl:2: missing field 'output'"):
        pdata.load_pair_split(missing, fc, pc, f, pdata.DataCounts())
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        pdata.load_pair_split(tmp_path / "bad.jsonl", fc, pc, f, pdata.DataCounts())
    long = {"instruction": "Resuma.", "input": "", "output": " ".join(["palavra"] * 60)}
    huge_prompt = {"instruction": " ".join(["pergunta"] * 80), "input": "", "output": "Sim."}
    rows = write_jsonl(tmp_path / "rows.jsonl", [INSTRUCTIONS[0], {"instruction": "Vazio", "output": "  "}, long, huge_prompt])
    counts = pdata.DataCounts()
    kept = pdata.load_pair_split(rows, fc, pc, f, counts)
    assert len(kept) == 2 and all(len(e) <= seq_len for e in kept)
    assert counts.to_dict() == {"records": 4, "kept": 2, "empty_output": 1, "truncated": 1, "no_response_left_after_truncation": 1}
    counts = pdata.DataCounts()
    pdata.load_pair_split(rows, FinetuneConfig(seq_len=seq_len, too_long="skip"), pc, f, counts)
    assert counts.to_dict()["skipped_too_long"] == 2


def test_preferences_drop_chosen_equal_rejected(tok, tmp_path):
    f = pdata.Formatter(tok)
    rows = write_jsonl(tmp_path / "pref.jsonl", [
        {"prompt": "Qual é a capital do Paraná?", "chosen": "Curitiba.", "rejected": "Manaus."},
        {"prompt": "Oi", "chosen": "Olá!", "rejected": " Olá! "},
    ])
    counts = pdata.DataCounts()
    pairs = pdata.load_pair_split(rows, FinetuneConfig(task="dpo", seq_len=128), PairsConfig(), f, counts)
    assert len(pairs) == 1 and counts.to_dict()["chosen_equals_rejected"] == 1
    chosen, rejected = pairs[0]
    assert chosen.n_labels == len(f.encode("Curitiba.")) + 1 and rejected.n_labels == len(f.encode("Manaus.")) + 1
    with pytest.raises(DataError, match="DPO needs preference records"):
        pdata.load_pair_split(write_jsonl(tmp_path / "sft.jsonl", INSTRUCTIONS), FinetuneConfig(task="dpo"), PairsConfig(), f,
                              pdata.DataCounts())


def test_pack_rows_fit_and_cover_every_example():
    lengths = [5, 9, 3, 12, 7, 1, 8, 16, 2, 2]
    rows = pdata.pack_rows(lengths, 16, packing=True)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 16 for r in rows)
    assert len(rows) == 5  # 65 tokens in rows of 16: best fit needs the minimum, 5
    assert pdata.pack_rows(lengths, 16, packing=False) == [[i] for i in range(len(lengths))]


def test_collate_resets_positions_per_example():
    a = pdata.Example([5, 6, 7], [6, 7, -100])
    b = pdata.Example([8, 9], [9, -100])
    batch = pdata.collate([[a, b], [b]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [8, 9, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]]
    assert batch.targets.tolist() == [[6, 7, -100, 9, -100], [9, -100, -100, -100, -100]]
    assert (batch.tokens, batch.labels) == (7, 4)


def test_packed_examples_never_attend_to_each_other(base):
    """The logits of every example in a packed row equal its logits alone; with one running
    position range (what packing without resets would do) they differ: the check can fail."""
    from brlm.posttrain.model import load_tokenizer

    tok = load_tokenizer(base)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(3)
    exs = [torch.randint(3, len(tok), (n,), generator=g) for n in (9, 4, 13)]
    packed = pdata.collate([[pdata.Example(e.tolist(), [-100] * len(e)) for e in exs]], pad_id=0)
    with torch.no_grad():
        together = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=e.unsqueeze(0), use_cache=False).logits[0] for e in exs])
        leaky = model(input_ids=packed.input_ids, use_cache=False).logits[0]
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(leaky[9:], alone[9:], atol=1e-3)
    pdata.check_isolation(model, len(tok), torch.device("cpu"))  # the trainer's own guard passes


def test_gzipped_pairs_read_like_plain_ones(tok, tmp_path):
    import gzip
    import shutil

    f, pc, fc = pdata.Formatter(tok), PairsConfig(), FinetuneConfig(seq_len=512)
    plain = write_jsonl(tmp_path / "rows.jsonl", INSTRUCTIONS)
    with open(plain, "rb") as src, gzip.open(tmp_path / "rows.jsonl.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    a = pdata.load_pair_split(plain, fc, pc, f, pdata.DataCounts())
    b = pdata.load_pair_split(tmp_path / "rows.jsonl.gz", fc, pc, f, pdata.DataCounts())
    assert [e.input_ids for e in a] == [e.input_ids for e in b] and len(a) == len(INSTRUCTIONS)
