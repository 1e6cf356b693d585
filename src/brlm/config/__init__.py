"""Typed configuration: the machinery (base), the library's sections, one root per workflow.

    base.py       field help, typed --set values, presets and scales, the precedence rule (resolve)
    sections.py   DataConfig, CleanConfig, TokenizerConfig, ModelConfig, TrainConfig, ...
    pretrain.py   RunConfig (= PretrainConfig), the root of `brlm run`, and load_config

Imports only brlm.errors (and brlm.io) below it, so every library module may import it.
"""

from brlm.config.base import (
    RootConfig,
    deep_merge,
    list_presets,
    preset_sections,
    preset_variants,
    read_config_file,
    read_preset,
    resolve,
)
from brlm.config.pretrain import (
    SECTIONS,
    PretrainConfig,
    RunConfig,
    config_from_dict,
    field_help,
    load_config,
    parse_override,
    valid_keys,
)
from brlm.config.sections import (
    CLEAN_PRESETS,
    CleanConfig,
    CostConfig,
    DataConfig,
    EvalConfig,
    GuardrailsConfig,
    ModelConfig,
    SampleConfig,
    TokenizerConfig,
    TrainConfig,
    clean_preset_overrides,
    swiglu_width,
)

__all__ = [
    "CLEAN_PRESETS",
    "SECTIONS",
    "CleanConfig",
    "CostConfig",
    "DataConfig",
    "EvalConfig",
    "GuardrailsConfig",
    "ModelConfig",
    "PretrainConfig",
    "RootConfig",
    "RunConfig",
    "SampleConfig",
    "TokenizerConfig",
    "TrainConfig",
    "clean_preset_overrides",
    "config_from_dict",
    "deep_merge",
    "field_help",
    "list_presets",
    "load_config",
    "parse_override",
    "preset_sections",
    "preset_variants",
    "read_config_file",
    "read_preset",
    "resolve",
    "swiglu_width",
    "valid_keys",
]
