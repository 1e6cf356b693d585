"""Extrinsic evaluation in Portuguese: QA (EM, F1), summarization and rewriting (ROUGE-L, chrF).

* `normalize`: brlm's Portuguese answer normaliser, and the seeds' defective one (`compat="seeds"`).
* `metrics`: per-item EM, token F1, ROUGE-L F1, chrF.
* `stats`: mean ± std over seeds, bootstrap CIs, paired bootstrap and permutation tests.
* `tasks`: the task classifier, building task sets from instruction JSONL, reading set files.
* `rescore`: metrics recomputed from details JSONL (brlm's and the seeds'), leak repair.
* `prompts`: the chat template (or a plain Portuguese instruction format) around an item.
* `generate`: `generate_answers(lm, prompts, max_new_tokens, batch_size)`, greedy, left-padded batches.
* `details`: the per-item details JSONL, appended as it goes and resumable.
* `summary`: per seed / across seeds / base vs adapted figures and their tables.
* `judge`: an LLM judge over an OpenAI-compatible endpoint (stdlib), cached, with agreement.

The CLI is `brlm eval extrinsic build|run|rescore` (brlm/verbs/extrinsic.py); `run` is the
workflow in brlm/stages/extrinsic.py.
"""

from brlm.eval.extrinsic.metrics import chrf, exact_match, rouge_l, score_item, token_f1
from brlm.eval.extrinsic.normalize import first_line, normalize_answer
from brlm.eval.extrinsic.tasks import TASKS, Item, build_sets, classify, read_set, read_sets

__all__ = ["TASKS", "Item", "build_sets", "chrf", "classify", "exact_match", "first_line", "normalize_answer",
           "read_set", "read_sets", "rouge_l", "score_item", "token_f1"]
