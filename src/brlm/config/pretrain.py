"""The pretraining workflow's root config (`brlm run` and the stage verbs data, tokenizer, train,
eval, sample): the library's sections composed into `RunConfig`, whose resolved form is the
`config.yaml` of every run folder.

    cfg = load_config(preset="demo", scale="tiny", overrides=["train.lr=3e-4"])
    again = load_config(config_file="runs/demo-tiny/config.yaml")   # repeats that run

Another workflow defines its own root the same way (a RootConfig subclass with its sections) and
resolves it with `brlm.config.base.resolve`, so its config.yaml holds only its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brlm.config import base
from brlm.config.base import RootConfig
from brlm.config.sections import (
    CleanConfig,
    CostConfig,
    DataConfig,
    EvalConfig,
    GuardrailsConfig,
    ModelConfig,
    SampleConfig,
    TokenizerConfig,
    TrainConfig,
)


@dataclass
class RunConfig(RootConfig):
    # The field order is the section order of config.yaml and of `--list-keys`.
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)


PretrainConfig = RunConfig
SECTIONS: dict[str, type] = RunConfig.sections()


def load_config(
    preset: str | None = None,
    scale: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    variant: str | None = None,
) -> RunConfig:
    """Resolve a pretraining config: defaults < preset < scale < variant < --set (base.resolve)."""
    return base.resolve(RunConfig, preset, scale, config_file, overrides, variant)


def config_from_dict(d: dict[str, Any], origin: str = "config") -> RunConfig:
    return base.config_from_dict(RunConfig, d, origin)


def parse_override(text: str) -> tuple[str, str, Any]:
    return base.parse_override(RunConfig, text)


def valid_keys() -> list[str]:
    return base.valid_keys(RunConfig)


def field_help() -> list[tuple[str, str, Any]]:
    """(key, help, default) for every pretraining key, for `--list-keys`."""
    return base.field_help(RunConfig)
