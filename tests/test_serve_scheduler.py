"""brlm.infer.scheduler: continuous batching over the engine, without HTTP. Sequences submitted
together share decode steps, each answer equals the same sequence decoded alone (greedy), a
cancelled sequence frees its row, a full queue refuses, close() drains."""

from __future__ import annotations

import queue
import threading

import pytest
import torch

from brlm.infer.engine import Engine, generate
from brlm.infer.sampling import make_sampler
from brlm.infer.scheduler import QueueFull, Scheduler, SchedulerClosed, Sequence
from brlm.models.registry import build_model
from tests.serving_helpers import LLAMA

PROMPTS = [[5, 9, 12], [7, 7, 30, 31, 2], [100, 4], [3, 14, 15, 92, 65, 35]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(LLAMA, 300).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # peaked logits: distinct greedy answers
    return m


def _collect(seqs: list[Sequence]) -> tuple[list[list[int]], list[str], list[threading.Event]]:
    outs, finish, done = [[] for _ in seqs], [""] * len(seqs), [threading.Event() for _ in seqs]
    for i, s in enumerate(seqs):
        def on_event(ev, i=i):
            if ev.finish is None:
                outs[i].append(ev.token)
            else:
                finish[i] = ev.finish
                done[i].set()
        s.on_event = on_event
    return outs, finish, done


def test_concurrent_sequences_share_steps_and_match_alone(model):
    greedy = make_sampler(0)
    alone = [generate(model, p, 20, greedy)[0] for p in PROMPTS]
    sched = Scheduler(Engine(model, max_batch=4), max_queue=8)
    seqs = [Sequence(p, 20, greedy) for p in PROMPTS]
    outs, finish, done = _collect(seqs)
    sched.submit(seqs)  # queued before the thread starts: admitted in the same step
    sched.start()
    assert all(d.wait(60) for d in done)
    sched.close()
    assert outs == alone and finish == ["length"] * 4
    assert sched.steps == 20  # 4 sequences of 20 tokens in 20 steps, not 80


def test_more_sequences_than_rows_are_admitted_as_rows_free_up(model):
    greedy = make_sampler(0)
    lengths = [3, 10, 5, 8, 2, 6]
    prompts = [PROMPTS[i % 4] for i in range(6)]
    alone = [generate(model, p, n, greedy)[0] for p, n in zip(prompts, lengths)]
    sched = Scheduler(Engine(model, max_batch=2), max_queue=8)
    seqs = [Sequence(p, n, greedy) for p, n in zip(prompts, lengths)]
    outs, _, done = _collect(seqs)
    sched.submit(seqs)
    sched.start()
    assert all(d.wait(60) for d in done)
    sched.close()
    assert outs == alone
    assert sched.steps < sum(lengths)  # a freed row takes the next sequence at once


def test_cancel_frees_the_row_and_queue_limit_and_drain(model):
    sched = Scheduler(Engine(model, max_batch=1), max_queue=1)
    events: queue.Queue = queue.Queue()
    long = Sequence(PROMPTS[0], 10_000, make_sampler(0), on_event=events.put)
    sched.submit([long])
    with pytest.raises(QueueFull):
        sched.submit([Sequence(PROMPTS[1], 5, make_sampler(0)), Sequence(PROMPTS[2], 5, make_sampler(0))])
    sched.start()
    events.get(timeout=30)  # generating
    waiting = Sequence(PROMPTS[1], 5, make_sampler(0))
    w_out, w_finish, w_done = _collect([waiting])
    sched.submit([waiting])
    long.cancel()
    assert w_done[0].wait(30) and w_finish == ["length"] and len(w_out[0]) == 5
    assert sched.stats()["cancelled"] == 1 and sched.stats()["running"] == 0
    sched.close(drain=True)
    with pytest.raises(SchedulerClosed):
        sched.submit([Sequence(PROMPTS[2], 5, make_sampler(0))])
