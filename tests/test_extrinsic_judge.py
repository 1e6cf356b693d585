"""The LLM judge (brlm.eval.extrinsic.judge) against a fake OpenAI-compatible endpoint on
127.0.0.1: scores parsed, cached by hash, agreement between two judges; timeouts, invalid JSON and
HTTP errors are recorded counts, never crashes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from brlm.eval.extrinsic.judge import (
    CRITERIA,
    JudgeCache,
    JudgeClient,
    agreement,
    judge_rows,
    parse_scores,
    quadratic_kappa,
)


def _scores_for(text: str, salt: str) -> dict[str, int]:
    h = hashlib.sha256((salt + text).encode()).digest()
    return {c: h[i] % 6 for i, c in enumerate(CRITERIA)}


class FakeJudge(BaseHTTPRequestHandler):
    """Behaviour by model name: 'bom' / 'bom2' answer JSON, 'cercado' fences it in text, 'lento'
    sleeps past the client's timeout (bounded), 'quebrado' answers prose, 'instavel' fails its first
    attempt per prompt, 'http500' errors, 'forma' returns a body that is not a chat completion."""

    requests: list[dict] = []
    seen: set[str] = set()

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"path": self.path, "model": body["model"], "auth": self.headers.get("Authorization")})
        model, user = body["model"], body["messages"][-1]["content"]
        if model == "lento":
            time.sleep(0.6)
        if model == "http500":
            self.send_response(500)
            self.end_headers()
            return
        content = json.dumps({**_scores_for(user, "b2" if model == "bom2" else ""), "justificativa": "ok"}, ensure_ascii=False)
        if model == "cercado":
            content = f"Aqui está:\n```json\n{content}\n```"
        elif model == "quebrado":
            content = "A resposta é boa, nota cinco."
        elif model == "instavel" and user not in FakeJudge.seen:
            FakeJudge.seen.add(user)
            content = '{"relevancia": 9}'
        payload = {"choices": [{"message": {"role": "assistant", "content": content}}]} if model != "forma" else {"oi": 1}
        data = json.dumps(payload).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


ROWS = [{"model": "m", "set": "s1", "task": t, "index": i, "hash": f"{t}{i}", "reference": "O cão comeu o gato.",
         "answer": f"resposta {t} {i}"} for t in ("qa", "rewriting") for i in range(3)]


def _item(row):
    return "Reescreva na voz ativa.", "O gato foi comido pelo cão."


def test_parse_scores():
    assert parse_scores('{"relevancia": 5, "coerencia": 4, "estilo": 3, "correcao": 0}') == dict(zip(CRITERIA, [5, 4, 3, 0]))
    fenced = 'Claro!\n```json\n{"relevancia": "4", "coerencia": 4.0, "estilo": 2, "correcao": 1, "justificativa": "x"}\n```'
    assert parse_scores(fenced) == dict(zip(CRITERIA, [4, 4, 2, 1]))
    for bad in ("nota 5", '{"relevancia": 6, "coerencia": 1, "estilo": 1, "correcao": 1}', '{"relevancia": 1}', "[1, 2]",
                '{"relevancia": true, "coerencia": 1, "estilo": 1, "correcao": 1}', "{not json}"):
        with pytest.raises(ValueError):
            parse_scores(bad)


def test_judge_scores_cache_and_key(endpoint, tmp_path):
    FakeJudge.requests.clear()
    client = JudgeClient(endpoint, "bom", api_key="segredo", timeout=5, retries=0)
    cache = JudgeCache(tmp_path / "cache.jsonl")
    scores, counts = judge_rows(client, ROWS, _item, cache)
    assert counts["judged"] == 6 and counts["failed"] == 0 and len(scores) == 6
    assert all(r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer segredo" for r in FakeJudge.requests)
    FakeJudge.requests.clear()
    again, counts = judge_rows(client, ROWS, _item, JudgeCache(tmp_path / "cache.jsonl"))  # read back from disk
    assert again == scores and counts["cached"] == 6 and counts["judged"] == 0 and not FakeJudge.requests
    other = JudgeClient(endpoint, "bom2", timeout=5, retries=0)  # another judge model: not the same cache entries
    _, counts = judge_rows(other, ROWS, _item, cache)
    assert counts["judged"] == 6 and FakeJudge.requests[-1]["auth"] is None


@pytest.mark.parametrize("model, kind", [("quebrado", "invalid_json"), ("http500", "http_error"), ("forma", "invalid_response"),
                                         ("lento", "timeout")])
def test_faults_are_counted_not_raised(endpoint, tmp_path, model, kind):
    client = JudgeClient(endpoint, model, timeout=0.2, retries=1, backoff=0)
    scores, counts = judge_rows(client, ROWS[:2], _item, JudgeCache(tmp_path / "c.jsonl"))
    assert scores == {} and counts["failed"] == 2 and counts[kind] == 4 and counts["judged"] == 0
    assert not (tmp_path / "c.jsonl").exists()  # failures are not cached


def test_retry_recovers_and_fenced_json_is_read(endpoint, tmp_path):
    client = JudgeClient(endpoint, "instavel", timeout=5, retries=1, backoff=0)
    scores, counts = judge_rows(client, ROWS[:3], _item, JudgeCache(tmp_path / "c.jsonl"))
    assert counts["judged"] == 3 and counts["invalid_json"] == 3 and counts["failed"] == 0
    _, counts = judge_rows(JudgeClient(endpoint, "cercado", timeout=5, retries=0), ROWS[:3], _item, JudgeCache(tmp_path / "d.jsonl"))
    assert counts["judged"] == 3


def test_dead_endpoint_gives_up(tmp_path):
    client = JudgeClient("http://127.0.0.1:9", "x", timeout=0.5, retries=0, backoff=0)  # port 9: nothing listens
    scores, counts = judge_rows(client, ROWS, _item, JudgeCache(tmp_path / "c.jsonl"), give_up_after=2)
    assert counts["connection_error"] == 2 and counts["failed"] == 2 and counts["skipped"] == 4 and counts["gave_up"]


def test_agreement_and_quadratic_kappa():
    assert quadratic_kappa([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert quadratic_kappa([3, 3, 3], [3, 3, 3]) is None
    # by hand, k = 2 (weight 1 off the diagonal): observed off-diagonal mass 1/4; marginals a (1/2, 1/2),
    # b (1/4, 3/4), expected off-diagonal mass 1/2 * 3/4 + 1/2 * 1/4 = 1/2; kappa = 1 - (1/4) / (1/2)
    assert quadratic_kappa([0, 0, 1, 1], [0, 1, 1, 1], k=2) == pytest.approx(1 - 0.25 / 0.5)
    a = {("m", "s", "qa", i): dict(zip(CRITERIA, [5, 4, 3, 2])) for i in range(4)}
    b = {("m", "s", "qa", i): dict(zip(CRITERIA, [5, 3 + i % 2, 3, 0])) for i in range(4)}
    ag = agreement(a, b)
    assert ag["n"] == 4
    assert ag["criteria"]["relevancia"]["exact"] == 1.0 and ag["criteria"]["coerencia"]["exact"] == 0.5
    assert ag["criteria"]["coerencia"]["mean_abs_diff"] == 0.5 and ag["criteria"]["correcao"]["mean_abs_diff"] == 2.0


def test_run_with_two_judges(endpoint, tmp_path, monkeypatch):
    from brlm.config.extrinsic import ExtrinsicConfig
    from brlm.stages.extrinsic import JUDGE_CACHE, TABLE, run_extrinsic

    from .extrinsic_models import make_brlm_run, make_sets, make_tokenizer_dir

    tok = make_tokenizer_dir(tmp_path / "tok")
    base, sft = make_brlm_run(tmp_path / "base", tok, seed=0), make_brlm_run(tmp_path / "sft", tok, seed=1)
    sets = [str(s) for s in make_sets(tmp_path / "sets", seeds=("seed1",), n=3)]
    monkeypatch.setenv("BRLM_JUDGE_API_KEY", "chave-de-teste")
    FakeJudge.requests.clear()
    cfg = ExtrinsicConfig(tasks="qa,rewriting", max_new_tokens_qa=4, max_new_tokens_long=4, n_resamples=200,
                          judge_url=endpoint + "/v1", judge_model="bom", judge_model_2="bom2", judge_timeout=5)
    result = run_extrinsic([str(base), str(sft)], sets, tmp_path / "out", cfg)
    j = result["judge"]
    assert j["counts"]["bom"]["judged"] == 12 and j["counts"]["bom2"]["judged"] == 12
    assert set(j["scores"]["bom"]) == {"base", "sft"} and j["scores"]["bom"]["base"]["qa"]["média"]["n"] == 3
    assert j["agreement"]["n"] == 12 and set(j["agreement"]["criteria"]) == set(CRITERIA)
    assert "comparisons" in j and j["comparisons"]["bom"]["sft"]["qa"]["n"] == 3
    assert {r["auth"] for r in FakeJudge.requests} == {"Bearer chave-de-teste"}
    assert "chave-de-teste" not in (tmp_path / "out" / "extrinsic.json").read_text()
    assert "Concordância entre juízes" in (tmp_path / "out" / TABLE).read_text()
    assert len((tmp_path / "out" / JUDGE_CACHE).read_text().splitlines()) == 24

    cfg = ExtrinsicConfig(tasks="qa", max_new_tokens_qa=4, n_resamples=200, judge_url=endpoint, judge_model="quebrado",
                          judge_retries=0)
    result = run_extrinsic([str(base)], sets, tmp_path / "out2", cfg)
    assert result["judge"]["counts"]["quebrado"]["invalid_json"] == 3 and result["judge"]["scores"]["quebrado"] == {}
