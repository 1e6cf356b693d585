"""`brlm serve`: the OpenAI-compatible server driven by the official `openai` client (chat,
completions, streaming, n, logprobs, stop), raw HTTP for the errors (401, 422, 400, 429), a client
that leaves mid-stream freeing its row, continuous batching over HTTP, SIGTERM draining a
subprocess `brlm serve`, and the web page (in headless Chromium when it is installed)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
import uvicorn  # noqa: E402

from brlm.infer.load import load_model  # noqa: E402
from brlm.serve.app import create_app  # noqa: E402
from tests.serving_helpers import LLAMA, ROLE_SYMBOLS, make_run, train_tokenizer_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "chave-de-teste"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a thread on 127.0.0.1 and a free port; `delay` slows each decode step so tests
    can act while a request is in flight."""

    def __init__(self, app):
        self.app, self.port = app, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sched = app.state.scheduler
        self.delay = 0.0
        step = self.sched.engine.step
        self.sched.engine.step = lambda: (time.sleep(self.delay) if self.delay else None) or step()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, key: str = "x") -> "openai.OpenAI":
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait(self, cond, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while True:
            h = self.health()
            if cond(h):
                return h
            assert time.time() < deadline, f"timed out; last /health: {h}"
            time.sleep(0.01)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A llama whose answers never end by themselves (eos and role markers banned): every answer
    is exactly max_tokens long, so step counts and usage are exact."""
    root = tmp_path_factory.mktemp("serve")
    tok = train_tokenizer_dir(root / "tok", symbols=ROLE_SYMBOLS)
    lm = load_model(make_run(root, tok, LLAMA, noise=0.3))
    banned = [lm.tokenizer.eos_id] + [lm.tokenizer.encode(m)[0] for m in ("<|sistema|>", "<|usuario|>", "<|assistente|>")]
    cfg = dataclasses.replace(LLAMA, tie_embeddings=False, block_size=128)
    return make_run(root, tok, cfg, noise=0.3, ban=banned)


@pytest.fixture(scope="module")
def server(run):
    with LiveServer(create_app(load_model(run), name="tiny", max_batch=4, max_queue=16, max_tokens_limit=100)) as s:
        yield s


@pytest.fixture(scope="module")
def strict(run):
    """With an API key, one row and a queue of one: for 401 / 429 / disconnect."""
    with LiveServer(create_app(load_model(run), name="tiny", max_batch=1, max_queue=1, api_key=KEY)) as s:
        yield s


def test_models_health_and_page(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"]
    h = server.health()
    assert h["status"] == "ok" and h["context"] == 128 and h["max_batch"] == 4
    assert h["decode"]["dtype"] == "fp32" and h["decode"]["compiled"] is False and h["decode"]["max_batch"] == 4
    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and 'lang="pt-BR"' in page.text
    assert "<script src" not in page.text and "innerHTML" not in page.text.split("<script>")[1]
    assert "@import" not in page.text and "url(" not in page.text  # no external fonts or styles


def test_chat_completion_with_usage(server):
    c = server.client()
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Qual é a capital do Brasil?"}],
                                  max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_chat_streaming_equals_the_whole_answer(server):
    c = server.client()
    msgs = [{"role": "system", "content": "Seja breve."}, {"role": "user", "content": "Olá!"}]
    whole = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=20, temperature=0)
    chunks = list(c.chat.completions.create(model="tiny", messages=msgs, max_tokens=20, temperature=0, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20 and not chunks[-1].choices


def test_completions_n_seed_logprobs_and_stream(server):
    c = server.client()
    r = c.completions.create(model="tiny", prompt="O ônibus da linha", max_tokens=8, temperature=1.0, n=3, seed=11,
                             logprobs=2)
    assert len(r.choices) == 3 and r.usage.completion_tokens == 24
    again = c.completions.create(model="tiny", prompt="O ônibus da linha", max_tokens=8, temperature=1.0, n=3, seed=11)
    assert [ch.text for ch in again.choices] == [ch.text for ch in r.choices]  # seeded: reproducible
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == 8 and all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    greedy = c.completions.create(model="tiny", prompt="O ônibus da linha", max_tokens=10, temperature=0, n=2)
    assert greedy.choices[0].text == greedy.choices[1].text
    streamed = list(c.completions.create(model="tiny", prompt="O ônibus da linha", max_tokens=10, temperature=0,
                                         stream=True))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == greedy.choices[0].text
    assert streamed[-1].usage.completion_tokens == 10


def test_stop_string_cuts_the_answer(server):
    c = server.client()
    full = c.completions.create(model="tiny", prompt="Sim. Não.", max_tokens=30, temperature=0).choices[0].text
    stop = full.strip()[len(full.strip()) // 2:][:3]
    assert stop
    cut = c.completions.create(model="tiny", prompt="Sim. Não.", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 30


def test_continuous_batching_shares_steps_and_matches_alone(server):
    c = server.client()
    prompts = ["O ônibus da linha", "Qual é a capital?", "Sim. Não. Talvez.", "Brasília"]
    server.delay = 0.005  # steps long enough that four requests sent at once are decoded together
    try:
        before = server.health()["steps"]
        alone = [c.completions.create(model="tiny", prompt=p, max_tokens=40, temperature=0).choices[0].text
                 for p in prompts]
        single = (server.health()["steps"] - before) / 4
        assert single == 40
        out: dict[int, str] = {}
        gate = threading.Barrier(4)

        def ask(i):
            gate.wait()
            out[i] = c.completions.create(model="tiny", prompt=prompts[i], max_tokens=40, temperature=0).choices[0].text

        before = server.health()["steps"]
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        together = server.health()["steps"] - before
    finally:
        server.delay = 0.0
    assert [out[i] for i in range(4)] == alone  # greedy: the same answer as served alone
    assert together <= 2 * single, f"4 concurrent requests took {together} steps; one alone takes {single}"


def _post(url: str, path: str, body, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=30)


def test_api_key_required_except_health(strict):
    assert httpx.get(strict.url + "/health", timeout=10).status_code == 200
    r = httpx.get(strict.url + "/v1/models", timeout=10)
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert _post(strict.url, "/v1/completions", {"prompt": "Oi", "max_tokens": 2}, key="errada").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        strict.client("errada").models.list()
    assert [m.id for m in strict.client(KEY).models.list().data] == ["tiny"]


@pytest.mark.parametrize("body, field", [
    ({"prompt": "Oi", "temperature": 5}, "temperature"),
    ({"prompt": "Oi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "Oi", "n": 100}, "n"),
    ({"prompt": "Oi", "top_p": 0}, "top_p"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": "Oi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_bad_bodies_are_422_naming_the_field(strict, body, field):
    r = _post(strict.url, "/v1/completions", body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]


def test_chat_bad_role_is_422(strict):
    r = _post(strict.url, "/v1/chat/completions", {"messages": [{"role": "robô", "content": "Oi"}]})
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("messages.0.role")


def test_long_prompt_400_or_truncated_and_max_tokens_capped(strict):
    long = "O ônibus da linha chegou atrasado. " * 60  # far past the 128-token context
    r = _post(strict.url, "/v1/completions", {"prompt": long, "max_tokens": 5})
    assert r.status_code == 400 and "context is 128" in r.json()["error"]["message"]
    r = _post(strict.url, "/v1/completions", {"prompt": long, "max_tokens": 5, "truncate": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
    assert r.json()["usage"]["prompt_tokens"] == 128 - 5
    r = _post(strict.url, "/v1/completions", {"prompt": "Oi", "max_tokens": 100_000})
    u = r.json()["usage"]
    assert r.status_code == 200 and u["prompt_tokens"] + u["completion_tokens"] == 128  # capped by the context


def _stream(url: str, body: dict, key: str = KEY):
    client = httpx.Client(timeout=60)
    resp = client.send(client.build_request("POST", url + "/v1/completions", json={**body, "stream": True},
                                            headers={"Authorization": f"Bearer {key}"}), stream=True)
    return client, resp


def test_queue_limit_is_429(strict):
    strict.delay = 0.02
    opened = []
    try:
        opened.append(_stream(strict.url, {"prompt": "Oi", "max_tokens": 500}))  # holds the one row
        strict.wait(lambda h: h["running"] == 1)
        opened.append(_stream(strict.url, {"prompt": "Oi", "max_tokens": 5}))  # waits in the queue of one
        strict.wait(lambda h: h["queued"] == 1)
        r = _post(strict.url, "/v1/completions", {"prompt": "Oi", "max_tokens": 2})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    finally:
        for client, resp in opened:
            resp.close()
            client.close()
        strict.delay = 0.0
    strict.wait(lambda h: h["running"] == 0 and h["queued"] == 0)


def test_client_leaving_mid_stream_frees_its_row(strict):
    strict.delay = 0.05  # the ~125 tokens the context leaves would take 6 s
    before = strict.health()
    t0 = time.time()
    client, resp = _stream(strict.url, {"prompt": "Oi", "max_tokens": 500})
    lines = resp.iter_lines()
    got = [next(lines) for _ in range(4)]
    assert any(line.startswith("data: ") for line in got)
    resp.close()
    client.close()
    _row_freed_soon(strict, before, t0)


def _row_freed_soon(strict, before: dict, t0: float) -> None:
    """The departed client's sequence was cancelled within seconds, long before its ~125 tokens,
    and its row serves the next request at once."""
    h = strict.wait(lambda h: h["running"] == 0)
    strict.delay = 0.0
    assert time.time() - t0 < 5
    assert h["cancelled"] == before["cancelled"] + 1
    assert h["generated_tokens"] - before["generated_tokens"] < 60
    assert _post(strict.url, "/v1/completions", {"prompt": "Oi", "max_tokens": 3}).status_code == 200


def test_client_leaving_before_a_whole_answer_frees_its_row(strict):
    # Not streaming: the handler waits for the whole answer, and must still notice the client left.
    strict.delay = 0.05
    before = strict.health()
    t0 = time.time()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(strict.url + "/v1/completions", json={"prompt": "Oi", "max_tokens": 500},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=0.5)
    _row_freed_soon(strict, before, t0)


def test_sigterm_finishes_requests_in_flight_then_exits(tmp_path, run):
    """Also the CLI's --compile --dtype bf16: the step is compiled before the first request and
    /health says what decodes."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("BRLM_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "brlm", "serve", str(run), "--port", str(port), "--max-batch", "2",
                             "--compile", "--dtype", "bf16"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240  # compiling comes first
        while True:
            try:
                h = httpx.get(url + "/health", timeout=2)
                if h.status_code == 200:
                    assert h.json()["decode"] == {**h.json()["decode"], "dtype": "bf16", "compiled": True, "max_batch": 2}
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "brlm serve did not come up"
            time.sleep(0.1)
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        chunks, at_signal = [], []

        def consume():
            for ch in c.completions.create(model="x", prompt="Oi", max_tokens=120, temperature=0, stream=True):
                chunks.append(ch)
                if len(chunks) == 2:  # in flight: ask the server to stop
                    at_signal.append(len(chunks))
                    proc.send_signal(signal.SIGTERM)

        reader = threading.Thread(target=consume)
        reader.start()
        reader.join(120)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert at_signal and chunks[-1].usage.completion_tokens == 120, err  # the answer was finished
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    # uvicorn re-raises the signal it caught once shut down, so the exit status says "SIGTERM" (as
    # a service manager expects) only after the drain.
    assert proc.returncode in (0, -signal.SIGTERM), err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_streams_an_answer_in_headless_chromium(server):
    exe = _chromium()
    if not exe:
        pytest.skip("chromium not installed (run `make browser`, i.e. apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="brlm-chromium-")
    try:
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                               "--virtual-time-budget=20000", "--dump-dom", server.url + "/?mensagem=Ol%C3%A1&max_tokens=8"],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = proc.stdout
    assert "Máx. de tokens" in dom and 'class="msg user"' in dom, proc.stderr[-2000:]
    assert 'class="msg assistant"' in dom, "the page did not send the message"
    answer = dom.split('class="msg assistant"', 1)[1].split("</div>", 1)[0]
    # Headless --dump-dom returns while the SSE stream may still be running (virtual time does not
    # wait for a streaming fetch), so the bubble is either still generating or finished with text
    # and its token count; the stream itself is tested with the official client above.
    if 'data-estado="pronto"' in answer:
        assert answer.split(">", 1)[1].strip() and "tokens gerados" in dom
    else:
        assert 'data-estado="gerando"' in answer
    json.dumps(dom[:10])


def test_the_extrinsic_judge_talks_to_brlm_s_own_server(tmp_path):
    """The LLM-as-judge client (brlm.eval.extrinsic.judge) against `brlm serve` with a context long
    enough for the rubric: the request is a valid chat completion (no HTTP or protocol error), and
    a tiny model's non-JSON verdict is a recorded `invalid_json` count, not a crash."""
    from collections import Counter

    from brlm.eval.extrinsic.judge import JudgeClient, judge_prompt

    tok = train_tokenizer_dir(tmp_path / "tok", symbols=ROLE_SYMBOLS)
    run = make_run(tmp_path, tok, dataclasses.replace(LLAMA, block_size=2048))
    with LiveServer(create_app(load_model(run), name="juiz", max_batch=2, max_queue=4, max_tokens_limit=16)) as s:
        client = JudgeClient(s.url, "juiz", retries=1, backoff=0.0, timeout=60, max_tokens=8)
        row = {"task": "qa", "reference": "Brasília", "answer": "Brasília"}
        counts: Counter = Counter()
        assert client.score(judge_prompt(row, "Qual é a capital do Brasil?", ""), counts) is None
    assert counts == Counter({"invalid_json": 2})  # both attempts answered; neither was the JSON asked for


@pytest.fixture(scope="module")
def free_server(tmp_path_factory):
    """A llama that may end its answers (eos allowed): for restricted answers, which end with eos."""
    root = tmp_path_factory.mktemp("serve-free")
    tok = train_tokenizer_dir(root / "tok", symbols=ROLE_SYMBOLS)
    run = make_run(root, tok, dataclasses.replace(LLAMA, block_size=256), noise=0.3)
    with LiveServer(create_app(load_model(run), name="free", max_batch=4, max_queue=16)) as s:
        yield s


def test_prompting_route_restricts_samples_and_votes(free_server):
    examples = [{"input": "A água ferve a 100 graus?", "output": "sim"}, {"input": "O sol é frio?", "output": "não"}]
    body = {"query": "O céu é azul?", "examples": examples, "options": ["sim", "não"], "n": 5, "seed": 3,
            "temperature": 1.0}
    r = httpx.post(free_server.url + "/v1/brlm/prompting", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["prompt"].startswith("Responda apenas com uma destas opções: sim, não.")
    assert out["prompt"].endswith("Entrada: O céu é azul?\nResposta:")
    assert [s["seed"] for s in out["samples"]] == [3, 4, 5, 6, 7]
    assert all(s["answer"] in ("sim", "não") for s in out["samples"])  # decoding itself is restricted
    assert out["answer"] in ("sim", "não") and out["n"] == 5 and sum(out["votes"].values()) == 5
    assert out["agreement"] == max(out["votes"].values()) / 5
    again = httpx.post(free_server.url + "/v1/brlm/prompting", json=body, timeout=60).json()
    assert again["samples"] == out["samples"]  # seeded
    free = httpx.post(free_server.url + "/v1/brlm/prompting", json={"query": "O céu é azul?", "examples": examples,
                                                                    "n": 2, "max_tokens": 8}, timeout=60).json()
    assert free["options"] is None and len(free["samples"]) == 2 and free["usage"]["completion_tokens"] <= 16
    bad = httpx.post(free_server.url + "/v1/brlm/prompting", json={"query": "x", "options": ["sim"]}, timeout=60)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "options"
