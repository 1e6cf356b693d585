"""The decoding engine, built like gpt-fast (github.com/pytorch-labs/gpt-fast): a pre-allocated
KV cache with one row per sequence, prefill separate from decode, and a decode step of one fixed
shape that `torch.compile` can capture once. Rows hold sequences of different lengths (each row
has its own position and attention mask), so the same engine serves batch-1 streaming, batched
greedy evaluation and a server's continuous batching (admit into a free row between steps, retire
finished rows):

    from brlm.infer.engine import Engine, generate, stream_generate
    from brlm.infer.sampling import make_sampler
    engine = Engine(model, max_batch=8)                       # max_len: model.block_size
    slot = engine.add(prompt_ids, 60, make_sampler(0), eos_id=2)
    for slot, token, stopped in engine.step(): ...            # one token per live row
    engine.release(slot)                                      # e.g. a stop string matched
    outs = engine.generate_batch(prompts, 60, make_sampler(0))  # [(new ids, info)], prompts in order

    ids, info = generate(model, prompt_ids, 60, make_sampler(0.8, top_k=50), generator=g, eos_id=2)
    for token in stream_generate(model, prompt_ids, 60, sampler):   # batch 1, one id at a time
        print(tok.decode([token]), end="", flush=True)

Every family works through the per-row cache protocol of brlm.models.cache (`make_cache(...).rows()`,
`slot(b)`, `commit(b, slot)`): attention models keep keys/values, the RNN its hidden state. A model
without `make_cache` (or `use_cache=False`) is decoded by running the whole (sliding) context of
each row every step: the reference the cached path is tested against.

What a step does: rows that need it are re-prefilled, then one forward of (B, 1) tokens for all
rows (free rows compute garbage that nobody reads), sampling per group of rows sharing a sampler,
the new ids written into a pre-allocated history (read by the repetition penalty), one `.tolist()`.
A row's prompt is prefilled without its last token; that token goes through the first decode step,
so every live row always has exactly one input token and the step's shape never changes.

Context handling is explicit, never silent:
* a prompt longer than the context is cut from the left and `info["warning"]` says so;
* when a cached attention row reaches the end of its context, the engine re-prefills it with the
  most recent `max_len // 2` tokens (`info["reprefills"]` counts them), so the cost of a re-prefill
  is paid once every max_len // 2 tokens instead of on every token.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.nn as nn

from brlm.infer.layout import choose_decode_dtype, decode_layout
from brlm.infer.sampling import make_sampler
from brlm.io.logging import info as log_info
from brlm.io.machine import cpu_bf16_support

# f(logits (B, V), generator, history (B, t) or None) -> next ids (B, 1); see brlm.infer.sampling.
Sampler = Callable[..., torch.Tensor]
# f(new token ids so far) -> a reason to stop (e.g. "stop string '\n\n'") or None.
StopFn = Callable[[list[int]], "str | None"]


def context_limit(model: nn.Module) -> int | None:
    """Tokens the model can attend to (None: unlimited, as a recurrent model's carried state)."""
    return getattr(model, "block_size", None)


def truncate_prompt(prompt_ids: list[int], limit: int | None, info: dict[str, Any]) -> list[int]:
    """Keep room for at least one generated token; say so in `info` when the prompt is cut."""
    if not prompt_ids:
        raise ValueError("empty prompt: need at least one token")
    if limit is not None and len(prompt_ids) > limit - 1:
        keep = max(limit - 1, 1)
        info["warning"] = (
            f"prompt truncated from the left: kept the last {keep} of {len(prompt_ids)} tokens (block_size={limit})"
        )
        return prompt_ids[-keep:]
    return prompt_ids


class Token(NamedTuple):
    """One sampled token of one row. `stopped` is set on the row's last event ("eos": `token` is
    the end-of-sequence id, not part of the completion; "max_new_tokens": it is the last one), and
    the row is then already free for the next sequence."""

    slot: int
    token: int
    stopped: str | None


@dataclass
class _Seq:
    max_new: int
    sampler: Sampler
    generator: torch.Generator | None
    eos_id: int | None
    info: dict[str, Any]
    hist_len: int  # ids in the history row: prompt + generated
    length: int = 0  # positions stored in the cache row
    new: int = 0
    t0: float = field(default_factory=time.perf_counter)


def _decode_step(model: nn.Module, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
    """One position for every row: tokens (B, 1) -> logits (B, V). The function torch.compile captures."""
    logits, _ = model(tokens, cache=cache)  # (B, 1, V)
    return logits[:, -1]


_compiled_steps: dict[str, Callable] = {}
_compile_failed = False


def _compiled(backend: str = "inductor") -> Callable | None:
    """The compiled decode step, shared by every engine (Dynamo guards on shapes, not on tensor
    identities, so a new engine of the same model and batch reuses the captured graph). gpt, llama
    and rnn steps are one graph; moe's expert routing (`nonzero`) splits it, the pieces between
    run eagerly."""
    if backend not in _compiled_steps and not _compile_failed:
        # Four span buckets (Engine._span) per batch size and model: more graphs than the default 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        try:
            # inductor's C++ wrapper calls the step's ~60 kernels without a Python call each: the
            # decode step is small enough that the Python wrapper was a fifth of it.
            options = {"cpp_wrapper": True} if backend == "inductor" else None
            _compiled_steps[backend] = torch.compile(_decode_step, backend=backend, dynamic=False, options=options)
        except Exception as e:  # noqa: BLE001 - any failure means: decode eagerly
            _give_up_compile(e)
    return _compiled_steps.get(backend)


def _give_up_compile(e: BaseException) -> None:
    global _compile_failed
    if not _compile_failed:
        log_info(f"engine: torch.compile unavailable ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                 "decoding eagerly")
    _compile_failed = True


def resolve_decode_dtype(name: str) -> torch.dtype:
    """'fp32', 'bf16', or 'auto' without a model to measure: bf16 weights where the CPU has native
    bf16 matmuls (AMX or AVX-512 BF16), fp32 elsewhere (emulated bf16 is slower than fp32). An
    Engine with dtype 'auto' measures its model instead (brlm.infer.layout.choose_decode_dtype)."""
    if name == "auto":
        return torch.bfloat16 if any(cpu_bf16_support().values()) else torch.float32
    if name not in ("fp32", "bf16"):
        raise ValueError(f"dtype={name!r}: expected 'auto', 'fp32' or 'bf16'")
    return torch.bfloat16 if name == "bf16" else torch.float32


class Engine:
    """Decode up to `max_batch` sequences at once, each in its own row (slot) of a static cache of
    `max_len` positions (default: the model's context). `compile=True` captures the decode step
    with torch.compile (inductor; a string names another backend) and falls back to eager, said
    once, when that fails; `dtype` 'bf16' decodes a bf16 copy of the weights (the model passed in
    is left as it is), 'auto' does so only where the CPU has native bf16 and this model's linear
    layers run faster in bf16 at `max_batch` rows (measured; `dtype_record` says why). `layout`
    'auto' keeps a transposed copy, or a copy packed for oneDNN, of each linear weight that
    multiplies `max_batch` rows faster that way on this CPU (brlm.infer.layout; `layout_record`
    says which), 'keep' decodes with the weights as they are. Prefill stays eager: its shape changes with every prompt."""

    def __init__(self, model: nn.Module, max_batch: int = 1, max_len: int | None = None,
                 device: str | torch.device = "cpu", use_cache: bool = True, compile: bool | str = False,
                 dtype: str = "fp32", layout: str = "auto"):
        if dtype == "auto":  # by measurement of this model's layers (brlm.infer.layout)
            decode_dtype, self.dtype_record = choose_decode_dtype(model, max_batch)
        else:
            decode_dtype, self.dtype_record = resolve_decode_dtype(dtype), {"chosen": dtype, "reason": "asked for"}
        owned = decode_dtype != torch.float32
        if owned:
            model = copy.deepcopy(model).to(torch.bfloat16)
        self.cached = use_cache and hasattr(model, "make_cache")
        # Only the cached step multiplies max_batch rows; uncached rows run whole contexts.
        model, self.layout_record = decode_layout(model, max_batch, layout if self.cached else "keep", owned)
        self.model = model.eval()
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.limit = context_limit(model)
        self.compile = (compile if isinstance(compile, str) else "inductor") if compile and self.cached else None
        self.max_len = min(max_len or self.limit or 1024, self.limit or max_len or 1024)
        B = max_batch
        # Keys and values in fp32 under bf16 weights on CPU: PyTorch's bf16 attention kernel is several
        # times slower there for a decode step's one query (models/cache.py); elsewhere the weights' dtype.
        self.cache_dtype = torch.float32 if self.device.type == "cpu" else decode_dtype
        self.cache = self.model.make_cache(B, self.max_len, self.device, dtype=self.cache_dtype).rows() \
            if self.cached else None
        self.capacity = getattr(self.cache, "max_len", None)  # None: a carried state never fills up
        self.tokens = torch.zeros(B, 1, dtype=torch.long, device=self.device)  # each row's next input
        self.active = torch.zeros(B, dtype=torch.long, device=self.device)  # 1 for a live row
        if self.cache is not None and hasattr(self.cache, "advance_by"):
            self.cache.advance_by = self.active  # free rows never grow
        # Every id of every row (prompt + generated) for the repetition penalty; positions past a
        # row's length repeat its first id, which the penalty treats exactly as if they were absent.
        self.hist = torch.zeros(B, (self.limit or 256) + 256, dtype=torch.long, device=self.device)
        self.hist_len = torch.zeros(B, dtype=torch.long, device=self.device)
        self.seqs: list[_Seq | None] = [None] * B
        self.last_info: list[dict[str, Any] | None] = [None] * B  # of the sequence a row last held
        self._groups: list[tuple[Sampler, torch.Generator | None, list[int], torch.Tensor]] | None = None
        self._logits: torch.Tensor | None = None  # uncached rows' last logits (B, V)

    @property
    def dtype_name(self) -> str:
        """The decode weights' dtype: 'fp32' or 'bf16' (what `dtype='auto'` chose)."""
        p = next(self.model.parameters(), None)
        return "bf16" if p is not None and p.dtype == torch.bfloat16 else "fp32"

    def describe(self) -> dict[str, Any]:
        """What decodes: weights dtype, whether the step is compiled (False again after a fallback),
        rows, context, and how many linear weights are kept transposed or packed for oneDNN (brlm.infer.layout)."""
        return {"dtype": self.dtype_name, "dtype_choice": self.dtype_record["reason"], "compiled": bool(self.compile),
                "cache_dtype": "fp32" if self.cache_dtype == torch.float32 else "bf16",
                "max_batch": self.max_batch, "context": self.max_len, "cache": self.cached,
                "transposed_weights": len(self.layout_record["transposed"]),
                "packed_weights": len(self.layout_record["packed"])}

    # -- admission and retirement ------------------------------------------------------------

    def free_slots(self) -> list[int]:
        return [b for b, s in enumerate(self.seqs) if s is None]

    @torch.inference_mode()
    def add(self, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler,
            generator: torch.Generator | None = None, eos_id: int | None = None) -> int:
        """Admit a sequence into a free row and prefill it; returns its slot. Its first token
        comes from the next step()."""
        free = self.free_slots()
        if not free:
            raise RuntimeError(f"engine full: all {self.max_batch} slots are in use; release one first")
        b = free[0]
        info: dict[str, Any] = {"prompt_tokens": len(prompt_ids), "cache": self.cached}
        ids = truncate_prompt(list(prompt_ids), self.limit, info)
        self._ensure_history(len(ids) + max(max_new_tokens, 0) + 1)
        self.hist[b].fill_(ids[0])
        self.hist[b, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=self.device)
        self.hist_len[b] = len(ids)
        seq = _Seq(max_new_tokens, sampler, generator, eos_id, info, hist_len=len(ids))
        info["reprefills"] = 0
        self.seqs[b] = seq
        self.active[b] = 1
        self._groups = None
        if self.cached:
            self._prefill(b, ids)
        return b

    def release(self, slot: int) -> dict[str, Any]:
        """Free a row (a stop string matched, a client left); returns the sequence's info."""
        seq = self.seqs[slot]
        if seq is None:
            return self.last_info[slot] or {}
        seq.info.setdefault("stopped", "released")
        seq.info["new_tokens"] = seq.new
        seq.info["seconds"] = time.perf_counter() - seq.t0
        self.last_info[slot] = seq.info
        self.seqs[slot] = None
        self.active[slot] = 0
        self.hist_len[slot] = 0
        self._groups = None
        return seq.info

    def _prefill(self, b: int, ids: list[int]) -> None:
        """Run all but the last id into row b; the last one is the row's next decode input."""
        sub = self.cache.slot(b)
        if len(ids) > 1:
            self.model(torch.tensor([ids[:-1]], dtype=torch.long, device=self.device), cache=sub)  # (1, T-1)
        self.cache.commit(b, sub)
        self.tokens[b, 0] = ids[-1]
        self.seqs[b].length = len(ids) - 1

    def _ensure_history(self, n: int) -> None:
        if n > self.hist.size(1):  # rare: grow by doubling, padding each row with its first id
            grown = self.hist[:, :1].expand(-1, max(n, 2 * self.hist.size(1))).clone()
            grown[:, : self.hist.size(1)] = self.hist
            self.hist = grown

    # -- one step --------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[Token]:
        """One token for every live row."""
        live = [b for b, s in enumerate(self.seqs) if s is not None]
        if not live:
            return []
        if self.cached:
            for b in live:
                if self.capacity is not None and self.seqs[b].length >= self.capacity:
                    self._reprefill(b)
            if hasattr(self.cache, "span"):
                self.cache.span = self._span(max(self.seqs[b].length for b in live) + 1)
            logits = self._forward()  # (B, V)
            for b in live:
                self.seqs[b].length += 1
        else:
            logits = self._window_logits(live)
        self._sample(logits)
        self.hist.scatter_(1, self.hist_len[:, None], self.tokens)  # free rows write into their own row
        self.hist_len.add_(self.active)
        tokens = self.tokens.view(-1).tolist()  # the step's one synchronisation
        out = []
        for b in live:
            seq, tok = self.seqs[b], tokens[b]
            seq.hist_len += 1
            stopped = None
            if seq.eos_id is not None and tok == seq.eos_id:
                stopped = "eos"
            else:
                seq.new += 1
                if seq.new >= seq.max_new:
                    stopped = "max_new_tokens"
            if stopped:
                seq.info["stopped"] = stopped
                self.release(b)
            out.append(Token(b, tok, stopped))
        return out

    def _forward(self) -> torch.Tensor:
        step = _compiled(self.compile) if self.compile else None
        if step is not None:
            saved = self.cache.lengths.clone() if hasattr(self.cache, "lengths") else None
            try:
                return step(self.model, self.tokens, self.cache)
            except Exception as e:  # noqa: BLE001 - a backend that cannot build: decode eagerly
                _give_up_compile(e)
                self.compile = None
                if hasattr(self.cache, "span"):
                    self.cache.span = self._span(int(self.cache.lengths.max()) + 1)
                if saved is not None:
                    self.cache.lengths.copy_(saved)
        return _decode_step(self.model, self.tokens, self.cache)

    def _span(self, need: int) -> int:
        """Cache slots attention reads: the `need` some live row uses, rounded up to a bucket, so
        a step reads no more of the cache than it must (at batch 8 the cache is as many bytes as
        the weights). Eager: buckets of 64. Compiled: quarters of the cache, so at most four
        shapes, each captured once (the recompile limit is raised to allow them)."""
        bucket = 64 if not self.compile else max(64, -(-self.capacity // 4))
        return min(-(-need // bucket) * bucket, self.capacity)

    def _reprefill(self, b: int) -> None:
        """Row b's context is full: start over from its most recent half window (module docstring)."""
        seq = self.seqs[b]
        keep = max(self.capacity // 2, 1)
        ids = self.hist[b, seq.hist_len - keep : seq.hist_len].tolist()
        self._prefill(b, ids)
        seq.info["reprefills"] += 1

    def _window_logits(self, live: list[int]) -> torch.Tensor:
        """Uncached: each live row runs its whole (sliding) context."""
        for b in live:
            n = self.seqs[b].hist_len
            start = 0 if self.limit is None else max(0, n - self.limit)
            logits, _ = self.model(self.hist[b : b + 1, start:n])  # (1, t, V)
            if self._logits is None:
                self._logits = logits.new_zeros(self.max_batch, logits.size(-1))
            self._logits[b] = logits[0, -1]
        return self._logits

    def _sample(self, logits: torch.Tensor) -> None:
        """Sample each group of rows that share a sampler and generator, on the logits' device."""
        if self._groups is None:
            groups: dict[tuple[int, int], list[int]] = {}
            for b, s in enumerate(self.seqs):
                if s is not None:
                    groups.setdefault((id(s.sampler), id(s.generator)), []).append(b)
            self._groups = [(self.seqs[rows[0]].sampler, self.seqs[rows[0]].generator, rows,
                             torch.tensor(rows, dtype=torch.long, device=self.device)) for rows in groups.values()]
        for sampler, gen, rows, rows_t in self._groups:
            n = max(self.seqs[b].hist_len for b in rows)
            if len(rows) == 1:  # batch 1: views, no copies
                b = rows[0]
                self.tokens[b : b + 1] = sampler(logits[b : b + 1], gen, self.hist[b : b + 1, :n])
            else:
                nxt = sampler(logits.index_select(0, rows_t), gen, self.hist.index_select(0, rows_t)[:, :n])
                self.tokens.index_copy_(0, rows_t, nxt)

    # -- whole batches -----------------------------------------------------------------------

    def warm_up(self) -> float:
        """Decode two tokens in a free row and free it again, so a compiled step is captured now
        rather than during the first real request; returns the seconds it took."""
        t0 = time.perf_counter()
        slot = self.add([0, 0], 2, make_sampler(0))
        while self.seqs[slot] is not None:
            self.step()
        return time.perf_counter() - t0

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, sampler: Sampler,
                       generator: torch.Generator | None = None, eos_id: int | None = None
                       ) -> list[tuple[list[int], dict[str, Any]]]:
        """Every prompt's completion (new ids, info), in order. More prompts than rows are admitted
        as rows free up (continuous batching); greedy results equal one-at-a-time decoding."""
        results: list[tuple[list[int], dict[str, Any]] | None] = [None] * len(prompts)
        owner: dict[int, int] = {}
        new: dict[int, list[int]] = {}
        todo = list(range(len(prompts)))[::-1]
        while todo or owner:
            while todo and self.free_slots():
                i = todo.pop()
                if max_new_tokens <= 0:
                    results[i] = ([], {"prompt_tokens": len(prompts[i]), "cache": self.cached, "stopped": "max_new_tokens"})
                    continue
                slot = self.add(prompts[i], max_new_tokens, sampler, generator, eos_id)
                owner[slot], new[slot] = i, []
            for slot, token, stopped in self.step():
                if stopped != "eos":
                    new[slot].append(token)
                if stopped:
                    results[owner.pop(slot)] = (new.pop(slot), self.last_info[slot])
        return results  # type: ignore[return-value]


def stream_generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    stop: StopFn | None = None,
    engine: Engine | None = None,
) -> Iterator[int]:
    """Yield each new token id as soon as it is sampled (batch 1); the generator's return value is
    the info dict (`stopped`, `reprefills`, `seconds`, `warning`, …). Chat, samples and guardrails
    decode through here; `generate` collects it. `engine`: a batch-1 Engine of this model to reuse
    (its cache, compiled step and bf16 weights are made once); else a fresh eager fp32 one."""
    was_training = model.training
    t0 = time.perf_counter()
    engine = engine or Engine(model, 1, device=device, use_cache=use_cache)
    slot = engine.add(prompt_ids, max_new_tokens, sampler, generator, eos_id)
    new: list[int] = []
    try:
        if max_new_tokens <= 0:
            engine.seqs[slot].info["stopped"] = "max_new_tokens"
        while max_new_tokens > 0 and engine.seqs[slot] is not None:
            (_, token, stopped), = engine.step()
            if stopped == "eos":
                break
            new.append(token)
            yield token  # outside inference mode: the caller's code runs with its own grad mode
            if stop is not None and not stopped and (reason := stop(new)):
                engine.seqs[slot].info["stopped"] = reason
                break
    finally:
        info = engine.release(slot)
        if was_training:
            model.train()
    info.pop("new_tokens", None)
    info["seconds"] = time.perf_counter() - t0
    return info


def generate(model: nn.Module, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler,
             **options: Any) -> tuple[list[int], dict[str, Any]]:
    """Generate up to max_new_tokens after prompt_ids (batch 1). Returns (new ids, info).
    `options` are stream_generate's (generator, eos_id, device, use_cache, stop, engine)."""
    stream = stream_generate(model, prompt_ids, max_new_tokens, sampler, **options)
    new: list[int] = []
    while True:
        try:
            new.append(next(stream))
        except StopIteration as done:
            return new, done.value
