"""The layering contract (README "How the code is laid out"): library below, workflows above.

Every `import brlm.X` / `from brlm.X import …` in src/brlm, at module level or inside a function,
must point at the same package or one listed before it:

    ground floor   errors, io
    library        config < data < tokenizers < models < compute < infer < eval < train < posttrain
    workflows      stages
    front          serve, runs, verbs, cli, __main__

A lower layer importing a higher one fails this test with the file, line and the import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "brlm"

ORDER = [
    # ground floor
    "__init__", "errors", "io",
    # library, low to high
    "config", "data", "tokenizers", "models", "compute", "infer", "eval", "train", "posttrain",
    # workflows
    "stages",
    # front
    "serve", "runs", "verbs", "cli", "__main__",
]
GROUND = {"__init__", "errors", "io"}
RANK = {name: 0 if name in GROUND else i for i, name in enumerate(ORDER)}  # the ground floor is one layer


def _package(parts: tuple[str, ...]) -> str:
    """`brlm.eval.extrinsic.metrics` -> `eval`; `brlm` -> `__init__`."""
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "brlm":  # `from brlm import x` imports the package brlm.x when it is one
                names = [f"brlm.{a.name}" for a in node.names if (SRC / a.name).exists() or (SRC / f"{a.name}.py").exists()]
                names = names or ["brlm"]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in out if name == "brlm" or name.startswith("brlm.")]


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("").parts
        out.append((path, rel[0]))
    return out


def test_every_package_has_a_layer():
    packages = {pkg for _, pkg in _modules()}
    assert packages <= set(ORDER), f"packages without a layer in the contract: {sorted(packages - set(ORDER))}"


def test_no_upward_imports():
    violations = []
    for path, pkg in _modules():
        for line, name in _imports(path):
            target = _package(tuple(name.split(".")))
            if target == pkg:
                continue
            if RANK[target] > RANK[pkg]:
                violations.append(f"{path.relative_to(SRC.parent)}:{line}: {pkg} imports {name} (a higher layer)")
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_ground_floor_imports_nothing_above_itself():
    for path, pkg in _modules():
        if pkg not in GROUND:
            continue
        for line, name in _imports(path):
            assert _package(tuple(name.split("."))) in GROUND, f"{path}:{line}: the ground floor imports {name}"


def test_the_contract_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a data module importing the pipeline is reported."""
    fake = tmp_path / "brlm"
    (fake / "data").mkdir(parents=True)
    (fake / "stages").mkdir()
    (fake / "data" / "bad.py").write_text("def f():\n    from brlm.stages.pretrain import STAGES\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)

    with pytest.raises(AssertionError, match="data imports brlm.stages.pretrain"):
        test_no_upward_imports()
