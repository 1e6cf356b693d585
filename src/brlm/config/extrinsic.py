"""The extrinsic evaluation's settings (`brlm eval extrinsic run`): one dataclass, a help line on
every field. Flags map one to one onto fields (`--batch-size` -> `batch_size`), and a bad value
is a ConfigError naming the flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from brlm.config.base import check, setting

TASK_NAMES = ("qa", "summarization", "rewriting")
PROMPT_FORMATS = ("auto", "chat", "plain")


@dataclass
class ExtrinsicConfig:
    tasks: str = setting("qa,summarization,rewriting", "comma-separated tasks to run")
    limit: int = setting(0, "items per task and set (0 = all); the first N of each set file")
    batch_size: int = setting(8, "prompts generated together (left-padded)")
    max_new_tokens_qa: int = setting(32, "new tokens for a QA answer")
    max_new_tokens_long: int = setting(160, "new tokens for a summary or a rewrite")
    prompt_format: str = setting("auto", "'auto' (the chat template when the tokenizer has one, else plain), 'chat' or 'plain'")
    system: str = setting("", "system message of the chat format (empty: none)")
    checkpoint: str = setting("best", "checkpoint of a brlm run: 'best', 'last' or a step")
    device: str = setting("cpu", "device the models run on")
    stats_seed: int = setting(0, "seed of the bootstrap and permutation resampling")
    n_resamples: int = setting(10_000, "bootstrap resamples and permutations")
    judge_url: str = setting("", "OpenAI-compatible endpoint of the LLM judge (empty: no judge)")
    judge_model: str = setting("", "the judge's model name")
    judge_model_2: str = setting("", "a second judge model, for agreement between judges (empty: none)")
    judge_key_env: str = setting("BRLM_JUDGE_API_KEY", "environment variable holding the judge's API key (unset: no key sent)")
    judge_timeout: float = setting(60.0, "seconds to wait for one judge answer")
    judge_retries: int = setting(2, "extra attempts after a timeout, an HTTP error or an answer that is not the JSON asked for")
    judge_limit: int = setting(0, "items judged per model, task and set (0 = all generated)")

    def __post_init__(self) -> None:
        tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        check(bool(tasks) and all(t in TASK_NAMES for t in tasks), "--tasks", self.tasks,
              f"a comma-separated subset of {','.join(TASK_NAMES)}")
        check(self.limit >= 0, "--limit", self.limit, "an integer >= 0")
        check(self.batch_size >= 1, "--batch-size", self.batch_size, "an integer >= 1")
        check(self.max_new_tokens_qa >= 1, "--max-new-tokens-qa", self.max_new_tokens_qa, "an integer >= 1")
        check(self.max_new_tokens_long >= 1, "--max-new-tokens-long", self.max_new_tokens_long, "an integer >= 1")
        check(self.prompt_format in PROMPT_FORMATS, "--prompt-format", self.prompt_format, " or ".join(PROMPT_FORMATS))
        check(self.n_resamples >= 100, "--n-resamples", self.n_resamples, "an integer >= 100")
        check(not self.judge_url or bool(self.judge_model), "--judge-model", self.judge_model, "a model name when --judge-url is given")
        check(not self.judge_model_2 or bool(self.judge_url), "--judge-url", self.judge_url, "an endpoint when --judge-model-2 is given")
        check(self.judge_timeout > 0, "--judge-timeout", self.judge_timeout, "a number of seconds > 0")
        check(0 <= self.judge_retries <= 10, "--judge-retries", self.judge_retries, "an integer in [0, 10]")
        check(self.judge_limit >= 0, "--judge-limit", self.judge_limit, "an integer >= 0")

    @property
    def task_list(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]

    def max_new_tokens(self, task: str) -> int:
        return self.max_new_tokens_qa if task == "qa" else self.max_new_tokens_long
