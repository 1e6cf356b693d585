"""The OpenAI-compatible HTTP server behind `brlm serve` (FastAPI), and its web chat page at `/`.

    from brlm.infer.load import load_model
    from brlm.serve.app import create_app
    app = create_app(load_model("runs/sft"), name="sft", max_batch=8, api_key="segredo")
    uvicorn.run(app, host="127.0.0.1", port=8000)     # what `brlm serve` does

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="segredo")
    client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Olá!"}], stream=True)

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (`stream: true` as
server-sent events ending in `data: [DONE]`), GET /health (no key needed), GET / (the page), and
brlm's prompting helpers, POST /v1/brlm/prompting (`query`, few-shot `examples`, `options` that
restrict the decoding, `n` samples voted on: answer, votes, agreement, every sample).

Every request becomes n sequences of brlm.infer.scheduler: one scheduler thread decodes all of
them in shared steps (continuous batching); this module only turns tokens into text (the chat
module's TextStream: stop strings and incomplete UTF-8 held back) and text into JSON. A stop string
or a client that goes away cancels the sequence, which frees its row before the next step.
Errors answer in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: 401 (key),
422 (a field out of range; `param` names it), 400 (prompt longer than the context, unless the
request says `truncate: true`), 429 (queue full), 503 (shutting down).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from brlm.infer.chat import TextStream, chat_prompt_ids
from brlm.infer.engine import Engine
from brlm.infer.prompting import (
    ANSWER_STOPS,
    Example,
    build_prompt,
    extract_answer,
    extract_option,
    majority_vote,
    option_constraint,
)
from brlm.infer.sampling import make_sampler
from brlm.infer.scheduler import Event, QueueFull, Scheduler, SchedulerClosed, Sequence
from brlm.tokenizers.hf import ROLE_MARKERS

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def _error(status: int, message: str, kind: str, param: str | None = None, **extra: Any) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}, **extra}
    return JSONResponse(body, status_code=status)


# -- request bodies --------------------------------------------------------------------------


class _Options(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI fields we do not implement are accepted, not applied

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name the official client sends
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=8)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    truncate: bool = Field(False, description="cut a prompt longer than the context from the left instead of 400")
    ignore_eos: bool = Field(False, description="vLLM's extension: generate max_tokens even past eos (benchmarks)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Options):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("one prompt per request (use n for several completions)")
            v = v[0]
        if not v:
            raise ValueError("empty prompt")
        return v


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = ""
    output: str
    instruction: str = ""


class PromptingRequest(_Options):
    """brlm's prompting helpers over HTTP (brlm.infer.prompting): a few-shot prompt from `examples`,
    restricted to `options` when given (the decoding itself is restricted), sampled `n` times
    (seeds seed, seed+1, …) and the answers voted on."""

    query: str = Field(min_length=1)
    examples: list[ExampleIn] = Field(default_factory=list, max_length=64)
    instruction: str = ""
    options: list[str] | None = Field(None, min_length=2, max_length=32)
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    n: int = Field(1, ge=1, le=16)
    max_tokens: int | None = Field(16, ge=1)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Options):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=5)


# -- the app ---------------------------------------------------------------------------------


def chat_page() -> str:
    return (resources.files("brlm") / "resources" / "chat.html").read_text(encoding="utf-8")


def create_app(lm: Any, name: str = "brlm", max_batch: int = 8, max_queue: int = 64, api_key: str | None = None,
               max_tokens_limit: int = 1024, device: str | torch.device = "cpu", engine: Engine | None = None) -> FastAPI:
    """A FastAPI app serving `lm` (brlm.infer.load.LoadedModel). The scheduler thread starts with
    the app's lifespan and drains on shutdown (uvicorn stops taking connections and lets the open
    ones finish first, so SIGTERM finishes in-flight requests)."""
    engine = engine or Engine(lm.model, max_batch=max_batch, device=device)
    server = _Server(lm, name, Scheduler(engine, max_queue=max_queue), max_tokens_limit)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.scheduler.start()
        yield
        await asyncio.to_thread(server.scheduler.close, True)

    app = FastAPI(title="brlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.state.scheduler = server.scheduler

    if api_key:
        app.add_middleware(_KeyCheck, api_key=api_key)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None  # drop the leading "body"
        msg = f"{field}: {first.get('msg', 'invalid')}" if field else first.get("msg", "invalid request body")
        return _error(422, msg, "invalid_request_error", field, detail=errors)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.kind, exc.param)

    @app.get("/health")
    async def health():
        stats = server.scheduler.stats()
        return {"status": "draining" if stats["closing"] else "ok", "model": name,
                "context": engine.max_len, "decode": engine.describe(), **stats}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(chat_page())

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": server.created,
                                            "owned_by": "brlm", "context_length": engine.max_len}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        ids = lm.tokenizer.encode(body.prompt)
        return await server.respond(body, ids, body.stops(), chat=False, logprobs=body.logprobs, request=request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        ids = chat_prompt_ids([m.model_dump() for m in body.messages], lm.tokenizer)
        stops = body.stops() + list(ROLE_MARKERS.values())  # the model starting a new turn ends its answer
        top = (body.top_logprobs or 0) if body.logprobs else None
        return await server.respond(body, ids, stops, chat=True, logprobs=top, request=request)

    @app.post("/v1/brlm/prompting")
    async def prompting(body: PromptingRequest, request: Request):
        return await server.prompting(body, request)

    return app


class _KeyCheck:
    """`Authorization: Bearer <key>` on every route but /health and / (the page holds no data, and a
    browser cannot attach a header to a page load: the page sends the key typed into it with each
    API call). Plain ASGI, not `@app.middleware("http")`, which would pass every chunk of a stream
    through an extra task and memory channel."""

    def __init__(self, app: Any, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/health", "/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  "authentication_error")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class _Mailbox:
    """Events from the scheduler thread into the event loop's per-request queues, with one wake-up
    of the loop per batch of events (a decode step of 8 rows posts 8 events) instead of one
    `call_soon_threadsafe` each."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._items: list[tuple[asyncio.Queue, Any]] = []
        self._lock = threading.Lock()

    def post(self, queue: asyncio.Queue, item: Any) -> None:
        with self._lock:
            self._items.append((queue, item))
            wake = len(self._items) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


class _Server:
    """Requests -> sequences -> JSON or server-sent events."""

    def __init__(self, lm: Any, name: str, scheduler: Scheduler, max_tokens_limit: int):
        self.lm, self.name, self.scheduler = lm, name, scheduler
        self.context = scheduler.engine.max_len
        self.max_tokens_limit = max_tokens_limit
        self.created = int(time.time())
        self._samplers: dict[tuple[float, float], Any] = {}
        self._mailbox: _Mailbox | None = None
        eos = lm.tokenizer.eos_id
        self.eos_id = eos if eos is not None and eos >= 0 else None

    def budget(self, ids: list[int], body: _Options, chat: bool) -> tuple[list[int], int]:
        """(prompt ids, max new tokens): max_tokens capped by the context left and the server limit."""
        asked = body.max_completion_tokens or body.max_tokens
        want = asked or (self.max_tokens_limit if chat else DEFAULT_COMPLETION_TOKENS)
        if len(ids) >= self.context:
            if not body.truncate:
                raise ApiError(400, f"the prompt has {len(ids)} tokens but the model's context is {self.context} "
                                    "(send 'truncate': true to keep its end)", param="messages" if chat else "prompt")
            ids = ids[-(self.context - min(want, self.context // 2)):]
        return ids, max(1, min(want, self.context - len(ids), self.max_tokens_limit))

    def sampler(self, body: _Options):
        # One sampler object per setting: the engine samples rows sharing a sampler together.
        key = (body.temperature, body.top_p)
        if key not in self._samplers:
            self._samplers[key] = make_sampler(body.temperature, 0, body.top_p, 1.0)
        return self._samplers[key]

    async def respond(self, body: _Options, ids: list[int], stops: list[str], chat: bool, logprobs: int | None,
                      request: Request | None = None, samplers: list[Any] | None = None, whole: bool = False):
        """The answer to one request: its n sequences decoded by the scheduler, returned whole or
        streamed. `samplers`: one per choice instead of the request's shared one (restricted
        decoding); `whole`: the collected choices, never a stream (for routes that post-process)."""
        ids, max_new = self.budget(ids, body, chat)
        if self._mailbox is None or self._mailbox.loop is not asyncio.get_running_loop():
            self._mailbox = _Mailbox(asyncio.get_running_loop())
        post = self._mailbox.post
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        seqs = []
        for i in range(body.n):
            gen = torch.Generator().manual_seed(body.seed + i) if body.seed is not None else None
            eos = None if body.ignore_eos else self.eos_id
            sampler = samplers[i] if samplers else self.sampler(body)
            seqs.append(Sequence(ids, max_new, sampler, gen, eos, logprobs=logprobs,
                                 on_event=lambda ev, i=i: post(queue, (i, ev))))
        try:
            self.scheduler.submit(seqs)
        except QueueFull as e:
            raise ApiError(429, str(e), "rate_limit_error") from None
        except SchedulerClosed as e:
            raise ApiError(503, str(e), "server_error") from None
        run = _Run(self, seqs, ids, stops, chat, logprobs, body.stream)
        if body.stream and not whole:
            return StreamingResponse(run.sse(queue), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        if request is None:
            return await run.whole(queue)
        # A client that leaves before a whole (non-streaming) answer is ready frees its rows too:
        # uvicorn does not cancel the handler, so watch for the disconnect beside the answer.
        answer = asyncio.ensure_future(run.whole(queue))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            gone.cancel()
            return answer.result()
        answer.cancel()  # events() cancels every sequence on the way out
        with contextlib.suppress(asyncio.CancelledError):
            await answer
        return JSONResponse({}, status_code=499)  # nobody reads it


    async def prompting(self, body: PromptingRequest, request: Request) -> dict[str, Any]:
        examples = [Example(e.input, e.output, e.instruction) for e in body.examples]
        options = [o.strip() for o in body.options or [] if o.strip()] or None
        if body.options is not None and (options is None or len(set(options)) < 2):
            raise ApiError(422, "options: expected at least two distinct non-empty options", param="options")
        prompt = build_prompt(examples, body.query, body.instruction, options)
        tok = self.lm.tokenizer
        base = make_sampler(body.temperature, 0, body.top_p, 1.0)
        # Restricted: each choice its own constrained sampler (it keeps state), ended by eos once an
        # option is complete; free: the answer ends at a blank line or a new "Entrada:" block.
        samplers = [option_constraint(base, tok, options)[0] for _ in range(body.n)] if options else None
        stops = [] if options else ANSWER_STOPS + body.stops()
        if options and self.eos_id is None:
            raise ApiError(400, "restricted answers need a tokenizer with an end-of-sequence token", param="options")
        answer = await self.respond(body, tok.encode(prompt), stops, chat=False, logprobs=None, request=request,
                                    samplers=samplers, whole=True)
        if not isinstance(answer, dict):  # the client left
            return answer
        seed0 = body.seed
        samples = []
        for i, choice in enumerate(answer["choices"]):
            text = choice["text"]
            samples.append({"seed": None if seed0 is None else seed0 + i, "completion": text,
                            "answer": extract_option(text, options) if options else extract_answer(text)})
        vote = majority_vote([r["answer"] for r in samples])
        return {"object": "brlm.prompting", "model": self.name, "query": body.query, "prompt": prompt,
                "options": options, **vote, "samples": samples, "usage": answer["usage"]}


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (the body is already read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Run:
    """One request's n choices in flight."""

    def __init__(self, server: _Server, seqs: list[Sequence], ids: list[int], stops: list[str], chat: bool,
                 logprobs: int | None, stream: bool):
        self.server, self.seqs, self.chat, self.logprobs = server, seqs, chat, logprobs
        self.tok = server.lm.tokenizer
        self.prompt_tokens = len(ids)
        self.streams = [TextStream(self.tok, stops) for _ in seqs]
        self.lps: list[list[dict[str, Any]]] = [[] for _ in seqs]
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def events(self, queue: asyncio.Queue) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice, new text, finish_reason or None) until every choice is finished. Tokens that
        arrived while the previous text was being sent go out together, one piece per choice:
        nothing waits that was ready, and a busy server writes fewer, larger chunks. Leaving early
        (a client gone, an error) cancels every sequence, which frees their rows."""
        live = len(self.seqs)
        try:
            while live:
                ready = [await queue.get()]
                while not queue.empty():
                    ready.append(queue.get_nowait())
                pending: dict[int, str] = {}
                for i, ev in ready:
                    stream = self.streams[i]
                    if ev.finish is None:
                        if stream.stopped:  # a stop string matched; the row is being freed
                            continue
                        piece = stream.push(ev.token)
                        if ev.logprob is not None:
                            self.lps[i].append({"id": ev.token, **ev.logprob})
                        if stream.stopped:
                            self.seqs[i].cancel()
                        if piece:
                            pending[i] = pending.get(i, "") + piece
                        continue
                    live -= 1
                    if ev.finish.startswith("error"):
                        raise ApiError(500, f"generation failed: {ev.finish}", "server_error")
                    reason = "stop" if stream.stopped or ev.finish in ("stop", "cancelled") else "length"
                    yield i, pending.pop(i, "") + stream.flush(), reason
                for i, piece in pending.items():
                    yield i, piece, None
        finally:
            for seq in self.seqs:
                seq.cancel()

    def usage(self) -> dict[str, int]:
        done = sum(len(s.ids) for s in self.streams)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}

    def _piece(self, t: int) -> str:
        return self.tok.decode([t])

    def logprob_block(self, i: int, start: int = 0) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        rows = self.lps[i][start:]
        if self.chat:
            return {"content": [{"token": self._piece(r["id"]), "logprob": r["logprob"],
                                 "top_logprobs": [{"token": self._piece(t), "logprob": lp} for t, lp in r["top"]]}
                                for r in rows]}
        return {"tokens": [self._piece(r["id"]) for r in rows], "token_logprobs": [r["logprob"] for r in rows],
                "top_logprobs": [{self._piece(t): lp for t, lp in r["top"]} for r in rows]}

    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.server.name}

    async def whole(self, queue: asyncio.Queue) -> dict[str, Any]:
        finish: dict[int, str] = {}
        async for i, _, reason in self.events(queue):
            if reason:
                finish[i] = reason
        choices = []
        for i, stream in enumerate(self.streams):
            text = stream.text()
            if self.chat:
                c = {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish[i]}
            else:
                c = {"index": i, "text": text, "finish_reason": finish[i]}
            c["logprobs"] = self.logprob_block(i)
            choices.append(c)
        return {**self._head(), "choices": choices, "usage": self.usage()}

    async def sse(self, queue: asyncio.Queue) -> AsyncIterator[str]:
        head = {**self._head(), "object": "chat.completion.chunk" if self.chat else "text_completion"}

        def data(obj: Any) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        if self.chat:
            for i in range(len(self.seqs)):
                yield data({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": None}]})
        sent = [0] * len(self.seqs)  # logprob rows already sent per choice
        try:
            async for i, piece, reason in self.events(queue):
                lp = self.logprob_block(i, sent[i])
                sent[i] = len(self.lps[i])
                if self.chat:
                    choice = {"index": i, "delta": {"content": piece} if piece else {}, "finish_reason": reason,
                              "logprobs": lp}
                else:
                    choice = {"index": i, "text": piece, "finish_reason": reason, "logprobs": lp}
                yield data({**head, "choices": [choice]})
        except ApiError as e:
            yield data({"error": {"message": e.message, "type": e.kind, "param": None, "code": e.status}})
        yield data({**head, "choices": [], "usage": self.usage()})  # as OpenAI's stream_options.include_usage
        yield "data: [DONE]\n\n"
