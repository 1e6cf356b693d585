"""LLM-as-judge for the extrinsic answers, through any OpenAI-compatible `/v1/chat/completions`.

    client = JudgeClient("http://127.0.0.1:8000", "qwen2.5-7b-instruct", api_key=os.environ.get("BRLM_JUDGE_API_KEY"))
    cache = JudgeCache(out / "extrinsic_judge_cache.jsonl")
    scores, counts = judge_rows(client, rows, cache)      # {row key: {"relevancia": 4, ...}}, counts
    agreement(scores_a, scores_b)                          # two judges on the same items

The judge reads a Portuguese rubric (`RUBRIC`) and the item (task, instruction, input, reference,
the model's answer) and must answer with one JSON object of four integer scores 0-5: relevância,
coerência, estilo, correção. Every failure is counted, never raised: a timeout, an HTTP or
connection error, a reply that is not OpenAI's shape, or content that is not the JSON asked for is
retried (`retries` extra attempts, with a short back-off); an item that still fails is counted as
`failed` and left out. After `give_up_after` items in a row fail, the judge stops (the endpoint is
down, not the item) and says so. Successes are cached by the SHA-256 of (judge model, prompt,
answer), so a rerun asks again only what it has not got.

Stdlib only (urllib): no client library to install.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from brlm.eval.extrinsic.details import Key, row_key

CRITERIA = ("relevancia", "coerencia", "estilo", "correcao")
TASK_NAMES_PT = {"qa": "pergunta e resposta", "summarization": "resumo", "rewriting": "reescrita"}

RUBRIC = """Você é um avaliador rigoroso de respostas em português do Brasil.
Avalie a RESPOSTA DO MODELO à TAREFA, usando a RESPOSTA DE REFERÊNCIA como guia do que se espera.
Dê uma nota inteira de 0 a 5 a cada critério:
- relevancia: a resposta faz o que a tarefa pede (0 = nada a ver com o pedido; 5 = exatamente o pedido);
- coerencia: o texto é claro, bem encadeado e sem contradições (0 = incompreensível; 5 = perfeitamente coerente);
- estilo: português correto e natural, no registro adequado à tarefa (0 = inaceitável; 5 = impecável);
- correcao: o conteúdo é correto e fiel à entrada e à referência, sem nada inventado (0 = errado; 5 = inteiramente correto).
Uma resposta vazia recebe 0 em todos os critérios.
Responda APENAS com um objeto JSON, sem nenhum texto antes ou depois, exatamente neste formato:
{"relevancia": 0, "coerencia": 0, "estilo": 0, "correcao": 0, "justificativa": "uma frase curta"}"""

OUTCOMES = ("judged", "cached", "failed", "timeout", "http_error", "connection_error", "invalid_response", "invalid_json")


def judge_prompt(row: dict[str, Any], instruction: str, input: str) -> str:
    """The user message for one details row (its answer, reference and the item's text)."""
    parts = [f"TAREFA ({TASK_NAMES_PT.get(row['task'], row['task'])}):\n{instruction.strip()}"]
    if input.strip():
        parts.append(f"ENTRADA:\n{input.strip()}")
    parts += [f"RESPOSTA DE REFERÊNCIA:\n{row['reference'].strip()}", f"RESPOSTA DO MODELO:\n{row['answer'].strip()}"]
    return "\n\n".join(parts)


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_scores(text: str) -> dict[str, int]:
    """The four criteria from a judge's reply (a JSON object, possibly fenced or with text around);
    ValueError when they are not there as numbers in [0, 5]."""
    text = _FENCE.sub("", (text or "").strip())
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("the JSON is not an object")
    out = {}
    for c in CRITERIA:
        v = obj.get(c)
        if isinstance(v, str) and v.strip().lstrip("-").replace(".", "", 1).isdigit():
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 5:
            raise ValueError(f"'{c}' must be a number from 0 to 5, got {v!r}")
        out[c] = int(round(v))
    return out


class JudgeError(Exception):
    """One failed attempt; `kind` is one of OUTCOMES."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class JudgeClient:
    """POSTs chat completions to an OpenAI-compatible endpoint (temperature 0)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 1.0, max_tokens: int = 200):
        u = url.rstrip("/")
        if not u.endswith("/chat/completions"):
            u += "/chat/completions" if u.endswith("/v1") else "/v1/chat/completions"
        self.endpoint, self.model, self.api_key = u, model, api_key
        self.timeout, self.retries, self.backoff, self.max_tokens = timeout, retries, backoff, max_tokens

    def complete(self, system: str, user: str) -> str:
        """The reply's content; JudgeError on any failure."""
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                           "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise JudgeError("http_error", f"HTTP {e.code}") from None
        except (TimeoutError, socket.timeout) as e:
            raise JudgeError("timeout", str(e)) from None
        except urllib.error.URLError as e:
            kind = "timeout" if isinstance(e.reason, (TimeoutError, socket.timeout)) else "connection_error"
            raise JudgeError(kind, str(e.reason)) from None
        except (ConnectionError, OSError) as e:
            raise JudgeError("connection_error", str(e)) from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError("invalid_response", "not an OpenAI chat completion") from None
        if not isinstance(content, str):
            raise JudgeError("invalid_response", "message content is not text")
        return content

    def score(self, user: str, counts: Counter) -> dict[str, int] | None:
        """Scores for one prompt, retrying; every failed attempt is counted by kind."""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * attempt)
            try:
                return parse_scores(self.complete(RUBRIC, user))
            except JudgeError as e:
                counts[e.kind] += 1
            except ValueError:
                counts["invalid_json"] += 1
        return None


class JudgeCache:
    """key -> scores, as JSONL in the out folder; appended and flushed per success."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict[str, int]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:  # our own file: a torn last line from an interrupted run is just not cached
                    obj = json.loads(line)
                    self.entries[obj["key"]] = {c: int(obj["scores"][c]) for c in CRITERIA}
                except (ValueError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(judge_model: str, prompt: str, output: str) -> str:
        blob = json.dumps([judge_model, RUBRIC, prompt, output], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, int] | None:
        return self.entries.get(key)

    def put(self, key: str, judge_model: str, scores: dict[str, int]) -> None:
        self.entries[key] = scores
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "judge_model": judge_model, "scores": scores}) + "\n")
            f.flush()


def judge_rows(client: JudgeClient, rows: Iterable[dict[str, Any]], items: Callable[[dict[str, Any]], tuple[str, str]],
               cache: JudgeCache, give_up_after: int = 5) -> tuple[dict[Key, dict[str, int]], dict[str, Any]]:
    """Scores of every row (`items(row)` gives the item's instruction and input) and the counts."""
    counts: Counter = Counter()
    scores: dict[Key, dict[str, int]] = {}
    failed_in_a_row, gave_up = 0, None
    for row in rows:
        instruction, inp = items(row)
        prompt = judge_prompt(row, instruction, inp)
        key = JudgeCache.key(client.model, prompt, row["answer"])
        if (hit := cache.get(key)) is not None:
            scores[row_key(row)] = hit
            counts["cached"] += 1
            continue
        if gave_up:
            counts["skipped"] += 1
            continue
        got = client.score(prompt, counts)
        if got is None:
            counts["failed"] += 1
            failed_in_a_row += 1
            if failed_in_a_row >= give_up_after:
                gave_up = f"stopped after {failed_in_a_row} items in a row failed"
            continue
        failed_in_a_row = 0
        counts["judged"] += 1
        cache.put(key, client.model, got)
        scores[row_key(row)] = got
    return scores, {**{k: counts.get(k, 0) for k in (*OUTCOMES, "skipped")}, "gave_up": gave_up}


def quadratic_kappa(a: Sequence[int], b: Sequence[int], k: int = 6) -> float | None:
    """Cohen's kappa with quadratic weights over the k ordered categories 0..k-1 (Cohen 1968);
    None when it is undefined (both judges gave one and the same score to every item)."""
    x, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    observed = np.zeros((k, k))
    np.add.at(observed, (x, y), 1.0)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    denom = float((w * expected).sum())
    if denom == 0:
        return None
    return float(1.0 - (w * observed).sum() / denom)


def agreement(a: dict[Key, dict[str, int]], b: dict[Key, dict[str, int]]) -> dict[str, Any]:
    """Two judges on the items both scored: per criterion the exact-agreement rate, the mean
    absolute difference of the scores and the quadratic-weighted kappa."""
    common = [k for k in a if k in b]
    out: dict[str, Any] = {"n": len(common), "criteria": {}}
    if not common:
        return out
    for c in CRITERIA:
        x, y = [a[k][c] for k in common], [b[k][c] for k in common]
        out["criteria"][c] = {"exact": float(np.mean([p == q for p, q in zip(x, y)])),
                              "mean_abs_diff": float(np.mean([abs(p - q) for p, q in zip(x, y)])),
                              "kappa_quadratic": quadratic_kappa(x, y), "n": len(common)}
    return out
