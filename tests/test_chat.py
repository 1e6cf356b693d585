"""`brlm chat` and brlm.infer.chat: the PT-BR template (same ids as the export's), streamed text
with stop strings held back, settings, the conversation state, and the real CLI driven through a
pipe, including Ctrl-C in the middle of an answer."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from brlm.errors import BrlmError
from brlm.infer.chat import (
    ChatSession,
    ChatSettings,
    TextStream,
    chat_prompt_ids,
    detect_mode,
    render_chat_text,
)
from brlm.infer.load import load_model
from tests.serving_helpers import LLAMA, ROLE_SYMBOLS, make_run, train_tokenizer_dir

CONVO = [
    {"role": "system", "content": "Seja breve."},
    {"role": "user", "content": "Qual é a capital do Brasil?"},
    {"role": "assistant", "content": "Brasília."},
    {"role": "user", "content": "E a de São Paulo?\nResponda em uma linha."},
]


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-toks")
    return {"plain": train_tokenizer_dir(root / "plain"), "roles": train_tokenizer_dir(root / "roles", symbols=ROLE_SYMBOLS)}


@pytest.fixture(scope="module")
def runs(toks, tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-runs")
    return {name: make_run(root, tok, noise=0.3) for name, tok in toks.items()}


@pytest.mark.parametrize("kind", ["plain", "roles"])
def test_template_is_the_exports_template(kind, toks, tmp_path):
    """A run's conversation gives the same text and ids as its `brlm export hf` tokenizer's
    apply_chat_template (the jinja CHAT_TEMPLATE)."""
    transformers = pytest.importorskip("transformers")
    from brlm.models.hf import HFTokenizer
    from brlm.tokenizers.base import load_tokenizer
    from brlm.tokenizers.hf import save_hf_tokenizer

    save_hf_tokenizer(toks[kind], tmp_path, model_max_length=64)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = load_tokenizer(toks[kind])
    for gen_prompt in (True, False):
        assert render_chat_text(CONVO, "</s>", gen_prompt) == hf.apply_chat_template(
            CONVO, add_generation_prompt=gen_prompt, tokenize=False)
        ids = chat_prompt_ids(CONVO, ours, gen_prompt)
        assert ids == chat_prompt_ids(CONVO, HFTokenizer(hf), gen_prompt)
        assert ids.count(ours.eos_id) == 1  # the assistant turn ends with the eos id, not "</s>" spelled out
    if kind == "roles":
        assert len(ours.encode("<|assistente|>")) == 1


def test_render_refuses_unknown_role():
    with pytest.raises(BrlmError, match="papel desconhecido"):
        render_chat_text([{"role": "tool", "content": "x"}])


class _PieceTokenizer:
    """Ids are indices into a list of strings; decode joins them."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_text_stream_holds_back_what_may_be_a_stop_string():
    tok = _PieceTokenizer(["Oi", " tudo", "<|us", "uario|>", "<|x", "\ufffd", "é", " bem"])
    s = TextStream(tok, ["<|usuario|>"])
    assert [s.push(0), s.push(1), s.push(4)] == ["Oi", " tudo", "<|x"]  # "<|x" cannot start the stop string
    assert s.push(2) == ""  # "<|us" might
    assert s.push(3) == "" and s.stopped == "<|usuario|>"
    assert s.text() == "Oi tudo<|x" and s.flush() == ""
    s = TextStream(tok, [])
    assert s.push(5) == ""  # an incomplete UTF-8 character (byte pieces) waits
    assert s.push(7) == "\ufffd bem"  # ...until something follows it
    assert s.flush() == ""


def test_settings_parse_and_check():
    st = ChatSettings()
    st.set("temperature", "0.2")
    st.set("max-tokens", "7")
    assert (st.temperature, st.max_tokens) == (0.2, 7)
    for key, value, msg in [("temperature", "quente", "esperava um número"), ("top_p", "0", "fora do intervalo"),
                            ("top_k", "1.5", "esperava um inteiro"), ("beam", "2", "desconhecido")]:
        with pytest.raises(BrlmError, match=msg):
            st.set(key, value)
    assert ChatSettings.from_run({"config": {"sample": {"temperature": 0.9, "seed": 3}}}).as_dict()["seed"] == 3


def test_mode_is_chat_only_for_models_that_know_the_markers(runs):
    assert detect_mode(load_model(runs["plain"])) == "continue"
    assert detect_mode(load_model(runs["roles"])) == "chat"


def test_session_is_reproducible_and_keeps_an_interrupted_answer(runs):
    lm = load_model(runs["roles"])
    session = ChatSession(lm, mode="chat", settings=ChatSettings(max_tokens=12, seed=5), system="Seja breve.")
    first = "".join(session.reply("Olá!"))
    assert session.last_info["new_tokens"] <= 12 and not session.last_info["interrupted"]
    assert session.messages[-1] == {"role": "assistant", "content": first}
    session.reset()
    assert "".join(session.reply("Olá!")) == first  # same seed, same turn -> same answer
    second_turn = session.reply("E agora?")
    shown = next(second_turn)
    second_turn.close()  # what Ctrl-C does
    assert session.messages[-1]["interrupted"] is True and session.messages[-1]["content"].startswith(shown)
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2
    assert session.prompt_ids("x")[0][:1] == lm.tokenizer.encode("<|sistema|>")


def test_session_drops_oldest_turns_and_keeps_the_system_message(runs):
    lm = load_model(runs["roles"])
    session = ChatSession(lm, mode="chat", settings=ChatSettings(max_tokens=8), system="Seja breve.")
    session.messages = [{"role": r, "content": "uma frase bem comprida sobre a praça e o ônibus " * 2}
                        for r in ("user", "assistant") * 3]
    ids, dropped = session.prompt_ids("Oi")
    assert dropped > 0 and len(ids) <= lm.model.block_size - 8
    assert ids[:1] == lm.tokenizer.encode("<|sistema|>")


def _chat_proc(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen([sys.executable, "-m", "brlm", "chat", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_cli_through_a_pipe(runs, tmp_path):
    save = tmp_path / "sub" / "conversa.json"
    script = ("/help\n/set temperature 0\n/set max_tokens 6\n/set top_k 9x\nOlá, tudo bem?\n/system Responda curto.\n"
              f"Qual é a capital?\n/comando\n/save {save}\n/sair\nnão chega aqui\n")
    proc = _chat_proc(str(runs["roles"]), "--seed", "11")
    out, err = proc.communicate(script, timeout=120)
    assert proc.returncode == 0, err
    assert "/reset" in err and "erro: /set top_k 9x" in err and "erro: /comando: comando desconhecido" in err
    assert err.count(" tokens/s") == 2 and "modo chat" in err
    saved = json.loads(save.read_text())
    assert saved["settings"]["temperature"] == 0 and saved["settings"]["max_tokens"] == 6 and saved["settings"]["seed"] == 11
    assert saved["system"] == "Responda curto." and saved["mode"] == "chat"
    assert [m["content"] for m in saved["messages"] if m["role"] == "user"] == ["Olá, tudo bem?", "Qual é a capital?"]
    answers = [m["content"] for m in saved["messages"] if m["role"] == "assistant"]
    assert out == "".join(a + "\n" for a in answers)  # stdout holds exactly the answers
    assert not list(save.parent.glob(".*.tmp"))  # written atomically


def test_cli_continue_mode_and_eof(runs):
    proc = _chat_proc(str(runs["plain"]), "--max-tokens", "4", "--temperature", "0")
    out, err = proc.communicate("O ônibus da linha\n", timeout=120)  # EOF after one line: leave quietly
    assert proc.returncode == 0 and "modo continue" in err and err.count(" tokens/s") == 1


def test_cli_bf16_weights_and_compiled_step(runs):
    """`brlm chat --dtype bf16 --compile`: the banner says what decodes, the answer is the greedy
    answer of the same compiled bf16 engine built in this process."""
    proc = _chat_proc(str(runs["plain"]), "--max-tokens", "5", "--temperature", "0", "--dtype", "bf16", "--compile")
    out, err = proc.communicate("O ônibus da linha\n", timeout=300)
    assert proc.returncode == 0, err
    assert "pesos bf16 · passo compilado" in err and err.count(" tokens/s") == 1
    session = ChatSession(load_model(runs["plain"]), mode="continue", settings=ChatSettings(max_tokens=5, temperature=0),
                          dtype="bf16", compile=True)
    assert session.engine.describe()["dtype"] == "bf16" and session.engine.describe()["compiled"]
    want = "".join(session.reply("O ônibus da linha"))
    assert out == want + "\n"


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(runs, tmp_path):
    save = tmp_path / "c.json"
    # A model that never ends an answer by itself (eos and the role markers banned): only Ctrl-C can.
    untied = dataclasses.replace(LLAMA, tie_embeddings=False)
    banned = [2] + [load_model(runs["roles"]).tokenizer.encode(m)[0] for m in ("<|sistema|>", "<|usuario|>", "<|assistente|>")]
    run = make_run(tmp_path, runs["roles"] / "tokenizer", untied, noise=0.3, ban=banned)
    proc = _chat_proc(str(run), "--max-tokens", "1000000", "--temperature", "1")
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()
    proc.stdin.write("Conte uma história bem longa.\n")
    proc.stdin.flush()
    deadline = time.time() + 60
    while len("".join(chunks)) < 20 and time.time() < deadline:  # the answer is streaming
        time.sleep(0.05)
    assert len("".join(chunks)) >= 20, "no streamed answer"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.stdin.write(f"/set max_tokens 3\nE agora?\n/save {save}\n")
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    err = proc.stderr.read()
    assert "interrompido" in err and err.count(" tokens/s") == 2
    msgs = json.loads(save.read_text())["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1]["interrupted"] is True and "interrupted" not in msgs[3]
    assert msgs[2]["content"] == "E agora?"
