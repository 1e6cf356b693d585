"""Argument parsing shared by the verbs: one-line errors, config flags, run folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from brlm.config import RunConfig, clean_preset_overrides, field_help, list_presets, resolve
from brlm.errors import BrlmError
from brlm.io.run_folder import RunPaths


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, and no flag prefixes
    (sub-parsers made with parser_class=type(p) get the same)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def parser(verb: str, description: str) -> ArgumentParser:
    # allow_abbrev=False: `--run X` must never be read as a prefix of another flag (`--runs-dir`).
    return ArgumentParser(prog=f"brlm {verb}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                          allow_abbrev=False)


def add_config_args(p: argparse.ArgumentParser, preset_flag: bool = True) -> None:
    g = p.add_argument_group("configuration (defaults < preset < --set)")
    if preset_flag:
        g.add_argument("--preset", help=f"preset name ({', '.join(list_presets())})")
    g.add_argument("--scale", help="preset scale, e.g. tiny (seconds) or small (minutes)")
    g.add_argument("--config", help="a resolved config.yaml (e.g. from an earlier run folder)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable (see --list-keys)")
    g.add_argument("--list-keys", action="store_true", help="list every config key with its default and exit")


def add_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run folder (default: runs/<preset>)")


def maybe_list_keys(args: argparse.Namespace, root: type | None = None) -> bool:
    if not getattr(args, "list_keys", False):
        return False
    from brlm.config import base

    for key, help_, default in (base.field_help(root) if root is not None else field_help()):
        print(f"{key:<32} {default!r:<18} {help_}")
    return True


def resolve_config(args: argparse.Namespace, run_dir: Path | None = None, extra: list[str] | None = None,
                   root: type = RunConfig) -> Any:
    """The config a verb runs with, by the one rule in brlm.config.base.resolve (`root`: the
    workflow's root config, RunConfig unless given).

    Source: --config if given; else the preset (and --variant); else the run folder's config.yaml;
    else the demo preset. Then, later winning: --clean's values, --set, the verb's own flags (extra).
    """
    clean = getattr(args, "clean", None)
    overrides = (clean_preset_overrides(clean) if clean else []) + list(getattr(args, "overrides", []) or []) + list(extra or [])
    preset, scale = getattr(args, "preset", None), getattr(args, "scale", None)
    config_file = getattr(args, "config", None)
    if not config_file and not preset and run_dir is not None and (run_dir / "config.yaml").is_file():
        config_file = run_dir / "config.yaml"
    if config_file:  # a resolved config is repeated as it is: --scale does not re-scale it
        return resolve(root, config_file=config_file, overrides=overrides)
    return resolve(root, preset or "demo", scale, overrides=overrides, variant=getattr(args, "variant", None))


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / cfg.preset


def existing_run(path: str) -> RunPaths:
    p = Path(path)
    if not p.is_dir():
        raise BrlmError(f"{p}: run folder not found")
    return RunPaths(p)
