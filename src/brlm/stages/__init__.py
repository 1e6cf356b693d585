"""Workflows: each owns its root config and its list of stages (see workflow.py).

A preset names its workflow with a top-level `workflow:` key (default `pretrain`); `brlm run`
looks it up here and walks that workflow's stages.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from brlm.errors import ConfigError

# workflow name -> module with `ROOT` (its root config class), `STAGES` (list of Stage) and
# `run_pipeline(cfg, paths, command)`
WORKFLOWS = {
    "pretrain": "brlm.stages.pretrain",
    "posttrain": "brlm.stages.posttrain",
    "track2": "brlm.stages.track2",
}


def workflow_module(name: str) -> ModuleType:
    if name not in WORKFLOWS:
        raise ConfigError(f"workflow {name!r}: unknown; available: {', '.join(sorted(WORKFLOWS))}")
    return importlib.import_module(WORKFLOWS[name])


def workflow_root(name: str) -> type:
    """The root config class of a workflow (RunConfig for pretrain, PosttrainConfig, Track2Config)."""
    return workflow_module(name).ROOT


def config_workflow(config_file: str | Path) -> str:
    """The workflow of a resolved config.yaml: the one its preset names (pretrain if none)."""
    from brlm.config import list_presets, read_config_file

    preset = str(read_config_file(config_file).get("preset") or "")
    return preset_workflow(preset) if preset in list_presets() else "pretrain"


def preset_workflow(preset: str | None) -> str:
    """The workflow a preset names (`workflow:` at the top of its YAML), `pretrain` by default."""
    from brlm.config import read_preset

    if not preset:
        return "pretrain"
    return str(read_preset(preset).get("workflow") or "pretrain")
