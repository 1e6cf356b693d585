"""Workflows: each owns its root config and its list of stages (see workflow.py).

A preset names its workflow with a top-level `workflow:` key (default `pretrain`); `brlm run`
looks it up here and walks that workflow's stages.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from brlm.errors import ConfigError

# workflow name -> module with `STAGES` (list of Stage) and `run_pipeline(cfg, paths, command)`
WORKFLOWS = {
    "pretrain": "brlm.stages.pretrain",
}


def workflow_module(name: str) -> ModuleType:
    if name not in WORKFLOWS:
        raise ConfigError(f"workflow {name!r}: unknown; available: {', '.join(sorted(WORKFLOWS))}")
    return importlib.import_module(WORKFLOWS[name])


def preset_workflow(preset: str | None) -> str:
    """The workflow a preset names (`workflow:` at the top of its YAML), `pretrain` by default."""
    from brlm.config import read_preset

    if not preset:
        return "pretrain"
    return str(read_preset(preset).get("workflow") or "pretrain")
