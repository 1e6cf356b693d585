"""Extrinsic evaluation against the shared development data (../shared/data, read-only, never
copied here): the seeds' sets read as they are, the classifier and hash agreeing with every shared
item, a build from sft_10k_test.jsonl, the seeds' published aggregate, and a rescore of any
per-item details file under reference/results. Skipped when the data is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brlm.eval.extrinsic.rescore import rescore_file
from brlm.eval.extrinsic.stats import mean_std
from brlm.eval.extrinsic.tasks import (
    SET_FIELDS,
    TASKS,
    build_sets,
    classify,
    item_hash,
    read_sets,
    write_sets,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CANARIM = DATA / "canarim"
RESULTS = DATA / "reference" / "results"
SEEDS = (123, 456, 789)

pytestmark = pytest.mark.skipif(not (CANARIM / "extrinsic").is_dir(), reason=f"shared data not found at {DATA}")


@pytest.fixture(scope="module")
def shared_sets():
    return {seed: read_sets(CANARIM / "extrinsic" / f"seed{seed}") for seed in SEEDS}


def test_shared_sets_read_as_they_are(shared_sets):
    for seed, sets in shared_sets.items():
        assert {t: len(v) for t, v in sets.items()} == {"qa": 200, "summarization": 200, "rewriting": 200}
        for task, items in sets.items():
            for it in items:
                # the seeds' classifier and hash, rewritten in brlm, agree with every shared item
                assert classify(it.instruction, it.input, it.reference) == task, (seed, it.hash)
                assert item_hash(it.instruction, it.input, it.reference) == it.hash


def test_build_from_the_sft_test_split(tmp_path, shared_sets):
    sets, manifest = build_sets(CANARIM / "sft_10k_test.jsonl",
                                [CANARIM / "sft_10k_train.jsonl", CANARIM / "sft_10k_val.jsonl"], n=200, seed=123)
    manifest = write_sets(tmp_path, sets, manifest)
    got = manifest["n_per_task_obtained"]
    # 1,000 rows hold fewer than 200 of each kind: all are scanned and every classified one is kept.
    assert manifest["scanned"] == manifest["source"]["rows"] == 1000
    assert sum(got.values()) == 1000 - manifest["excluded"] - manifest["duplicates"] - manifest["unclassified"]
    assert manifest["excluded"] == manifest["excluded_in_source"] > 0
    assert all(got[t] > 0 for t in TASKS)
    for task in TASKS:                                   # the same kind of file as the shared sets
        rows = [json.loads(line) for line in (tmp_path / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert all(tuple(r) == SET_FIELDS and r["task"] == task for r in rows)
    shared = {it.hash for sets_ in shared_sets.values() for items in sets_.values() for it in items}
    built = {h for hs in manifest["hashes"].values() for h in hs}
    # The seeds drew their sets from the whole of Canarim with sft_10k_test excluded: no overlap.
    assert not built & shared
    print(f"\nbuilt {got}, excluded {manifest['excluded']}, overlap with the shared sets {len(built & shared)}")


def test_published_aggregate_is_mean_and_sample_std():
    path = RESULTS / "eval_trilha2_extrinsic_multiseed.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    ref = json.loads(path.read_text())
    for task, sides in ref["aggregate"].items():
        if task == "cost":
            continue
        for side, metrics in sides.items():
            for metric, agg in metrics.items():
                values = [run[task][side][metric] for run in ref["runs"]]
                got = mean_std(values)
                assert got["mean"] == pytest.approx(agg["mean"], abs=1e-12)
                assert got["std"] == pytest.approx(agg["std"], abs=1e-12)      # ddof = 1


def test_rescore_reference_details_files():
    files = sorted(RESULTS.glob("*details*.jsonl"))
    if not files:
        pytest.skip(f"no per-item details files under {RESULTS}")
    for path in files:
        r = rescore_file(path, compat="seeds")
        if r.stored_mismatches is not None:
            assert r.stored_mismatches == 0, path
        fixed = rescore_file(path, repair=True)
        assert set(fixed.table) <= set(TASKS)
