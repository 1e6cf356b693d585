"""Continuous batching over the decoding engine: one thread owns an `Engine` and, between decode
steps, admits queued sequences into free rows and retires finished ones, so concurrent requests
share decode steps instead of waiting in line (Orca, Yu et al. 2022; vLLM's scheduler).

    from brlm.infer.scheduler import Scheduler, Sequence
    sched = Scheduler(Engine(model, max_batch=8), max_queue=64).start()
    seq = Sequence(prompt_ids, 60, make_sampler(0), eos_id=2, on_event=events.put)
    sched.submit([seq])        # QueueFull when max_queue sequences already wait: the server's 429
    ...                        # on_event(Event(token, logprob, None)) per token, then Event(None, None, reason)
    seq.cancel()               # a client left or a stop string matched: its row is freed before the next step
    sched.close(drain=True)    # stop admitting, finish what is queued and running, join the thread

Threading model: the engine (its cache, its rows) is touched only by the scheduler thread, so it
needs no lock; other threads only append to the queue (under a condition variable) and set a
sequence's `cancelled` flag, which the scheduler reads between steps. Events are handed to
`on_event` from the scheduler thread: a caller on an asyncio loop passes a function that uses
`loop.call_soon_threadsafe` (brlm.serve.app). The last event of every sequence has `finish` set:
"stop" (eos), "length" (max_new_tokens), "cancelled" or "error: …".
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch

from brlm.infer.engine import Engine, Sampler


class QueueFull(RuntimeError):
    """The queue already holds max_queue sequences waiting for a row."""


class SchedulerClosed(RuntimeError):
    """The scheduler is draining or stopped and takes no new sequences."""


class Event(NamedTuple):
    token: int | None  # a generated id (None on the final event)
    logprob: dict[str, Any] | None  # {"logprob": float, "top": [(id, logprob), …]} when asked
    finish: str | None  # set on the sequence's last event


@dataclass(eq=False)
class Sequence:
    """One sequence to decode. `logprobs` None: none; k >= 0: the sampled token's log-probability
    under the model (before temperature / top-p) plus the k most likely alternatives."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampler: Sampler
    generator: torch.Generator | None = None
    eos_id: int | None = None
    on_event: Callable[[Event], None] = lambda ev: None
    logprobs: int | None = None
    cancelled: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the engine's info once finished
    _lp: dict[str, Any] | None = None

    def cancel(self) -> None:
        """Ask the scheduler to free this sequence's row (a plain flag: safe from any thread)."""
        self.cancelled = True


def _with_logprobs(seq: Sequence) -> Sampler:
    """The sequence's sampler, also recording the sampled id's log-probability (one row: a sequence
    with logprobs gets its own sampler, so the engine samples it alone)."""
    base, k = seq.sampler, seq.logprobs or 0

    def sample(logits: torch.Tensor, generator: torch.Generator | None = None, history: torch.Tensor | None = None):
        nxt = base(logits, generator, history)  # (1, 1)
        lp = torch.log_softmax(logits.float(), dim=-1)  # (1, V)
        top = torch.topk(lp, k, dim=-1) if k else None
        seq._lp = {"logprob": float(lp[0, nxt[0, 0]]),
                   "top": list(zip(top.indices[0].tolist(), top.values[0].tolist())) if top is not None else []}
        return nxt

    return sample


class Scheduler:
    """Continuous batching over `engine` (module docstring). `steps` counts decode steps, the
    figure the batching test compares: n concurrent sequences take about as many steps as one."""

    def __init__(self, engine: Engine, max_queue: int = 64):
        self.engine = engine
        self.max_queue = max_queue
        self._pending: deque[Sequence] = deque()
        self._cv = threading.Condition()
        self._owner: dict[int, Sequence] = {}  # slot -> sequence; scheduler thread only
        self._closing = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.finished = 0
        self.cancelled = 0
        self.generated = 0

    # -- any thread ---------------------------------------------------------------------------

    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self._loop, name="brlm-scheduler", daemon=True)
        self._thread.start()
        return self

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences (all or none: the n choices of one request go in together)."""
        with self._cv:
            if self._closing:
                raise SchedulerClosed("the server is shutting down")
            if len(self._pending) + len(seqs) > self.max_queue:
                raise QueueFull(f"queue full: {len(self._pending)} sequences waiting (max_queue={self.max_queue})")
            self._pending.extend(seqs)
            self._cv.notify()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Take nothing new; with `drain`, finish queued and running sequences first, else cancel them."""
        with self._cv:
            self._closing = True
            if not drain:
                for seq in list(self._pending) + list(self._owner.values()):
                    seq.cancel()
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"running": len(self._owner), "queued": len(self._pending), "max_batch": self.engine.max_batch,
                "max_queue": self.max_queue, "steps": self.steps, "finished": self.finished,
                "cancelled": self.cancelled, "generated_tokens": self.generated, "closing": self._closing}

    # -- the scheduler thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._owner and not self._closing:
                    self._cv.wait()
                if self._closing and not self._pending and not self._owner:
                    return
                free = len(self.engine.free_slots())
                admit = [self._pending.popleft() for _ in range(min(free, len(self._pending)))]
            for seq in admit:  # prefill outside the lock: submit() never waits for the model
                self._admit(seq)
            for slot, seq in list(self._owner.items()):
                if seq.cancelled:
                    self._retire(slot, "cancelled")
            if not self._owner:
                continue
            try:
                tokens = self.engine.step()
            except Exception as e:  # noqa: BLE001 - one bad step must not kill the server
                for slot in list(self._owner):
                    self._retire(slot, f"error: {e.__class__.__name__}: {e}")
                continue
            self.steps += 1
            for slot, token, stopped in tokens:
                seq = self._owner[slot]
                if stopped != "eos":
                    self.generated += 1
                    seq.on_event(Event(token, seq._lp, None))
                if stopped:
                    self._retire(slot, "stop" if stopped == "eos" else "length")

    def _admit(self, seq: Sequence) -> None:
        if seq.cancelled:
            self.cancelled += 1
            seq.on_event(Event(None, None, "cancelled"))
            return
        sampler = _with_logprobs(seq) if seq.logprobs is not None else seq.sampler
        try:
            slot = self.engine.add(seq.prompt_ids, seq.max_new_tokens, sampler, seq.generator, seq.eos_id)
        except Exception as e:  # noqa: BLE001 - e.g. an empty prompt: this sequence fails, not the server
            seq.on_event(Event(None, None, f"error: {e}"))
            return
        seq.info["t_admitted"] = time.perf_counter()
        self._owner[slot] = seq

    def _retire(self, slot: int, finish: str) -> None:
        seq = self._owner.pop(slot)
        seq.info.update(self.engine.release(slot))  # a row the engine already freed returns its info
        if finish == "cancelled":
            self.cancelled += 1
        else:
            self.finished += 1
        seq.on_event(Event(None, None, finish))
