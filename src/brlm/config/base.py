"""Config machinery shared by every workflow: field help, typed `--set` values, presets, scales,
and the one precedence rule.

A workflow's root config is a dataclass that subclasses `RootConfig` (fields `preset` and
`scale`) and adds one field per section, each a dataclass of settings (see sections.py).
Everything here works on any such root, so a new workflow is a new root config, not new code:

    cfg = resolve(RunConfig, preset="demo", scale="tiny", overrides=["train.lr=3e-4"])

Precedence, lowest first: dataclass defaults < preset < its scale < a variant of the preset's
`runs:` < the variant's scale < `--set` overrides, in order. A `--config FILE` (the resolved
config.yaml of an earlier run) stands in for the preset layers. Unknown keys are errors that list
the valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from brlm.errors import ConfigError


def setting(default: Any, help: str) -> Any:
    """A dataclass field with a help line (shown by `brlm run --list-keys`)."""
    return field(default=default, metadata={"help": help})


def check(cond: bool, key: str, value: Any, expected: str) -> None:
    """Raise a ConfigError naming the key, its value and what was expected."""
    if not cond:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


@dataclass
class RootConfig:
    """A workflow's whole config: the preset and scale it came from, then its sections."""

    preset: str = "custom"
    scale: str = "default"

    @classmethod
    def sections(cls) -> dict[str, type]:
        """Section name -> dataclass, in field order (a section is a field with a default_factory)."""
        return {f.name: f.default_factory for f in dataclasses.fields(cls)
                if f.default_factory is not dataclasses.MISSING}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def section_hash(self, *names: str) -> str:
        """Content hash of some sections: the cache key of the stages that read only those."""
        blob = json.dumps({n: dataclasses.asdict(getattr(self, n)) for n in names}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


R = TypeVar("R", bound=RootConfig)


# ---------------------------------------------------------------------------------------------
# Keys, help and typed values

def valid_keys(root: type[RootConfig]) -> list[str]:
    return [f"{s}.{f.name}" for s, cls in root.sections().items() for f in dataclasses.fields(cls)]


def field_help(root: type[RootConfig]) -> list[tuple[str, str, Any]]:
    """(key, help, default) for every key of the root's sections, for `--list-keys`."""
    return [(f"{section}.{f.name}", f.metadata.get("help", ""), f.default)
            for section, cls in root.sections().items() for f in dataclasses.fields(cls)]


def _type_name(typ: Any) -> str:
    # Under `from __future__ import annotations` a field's type is its name as a string.
    return typ if isinstance(typ, str) else typ.__name__


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check and convert one value to its field's type (YAML gives us ints for floats, etc.)."""
    name = _type_name(typ)
    if isinstance(value, str) and name in ("int", "float"):
        # YAML 1.1 reads '3e-4' (no dot) as a string; accept any number Python can parse.
        try:
            value = int(value) if name == "int" else float(value)
        except ValueError:
            pass
    if name == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}={value!r}: expected a number")
    if name == "str":
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}={value!r}: expected a string")
        return str(value)
    raise AssertionError(f"unsupported field type {typ!r} for {key}")


def _section_from_dict(cls: type, section: str, values: dict[str, Any], origin: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(f"{section}.{k}" for k in fields)
            raise ConfigError(f"{origin}: unknown key '{section}.{key}'; valid keys: {valid}")
        kwargs[key] = _coerce(f"{section}.{key}", value, fields[key].type)
    return cls(**kwargs)


def config_from_dict(root: type[R], d: dict[str, Any], origin: str = "config") -> R:
    """Build a root config from a mapping of sections (missing keys keep their defaults)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(d).__name__}")
    sections = root.sections()
    names = [f.name for f in dataclasses.fields(root)]
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: section '{key}' must be a mapping, got {type(value).__name__}")
            kwargs[key] = _section_from_dict(sections[key], key, value, origin)
        elif key in names:  # preset, scale: labels of where the config came from
            kwargs[key] = str(value)
        else:
            raise ConfigError(f"{origin}: unknown section '{key}'; valid: {', '.join(names)}")
    return root(**kwargs)


def parse_override(root: type[RootConfig], text: str) -> tuple[str, str, Any]:
    """'train.lr=3e-4' -> ('train', 'lr', '3e-4' parsed as YAML, i.e. 0.0003)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    sections = root.sections()
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(f"--set {text!r}: unknown key '{key}'; valid keys: {', '.join(valid_keys(root))}")
    section, name = parts
    names = {f.name: f for f in dataclasses.fields(sections[section])}
    if name not in names:
        raise ConfigError(f"--set {text!r}: unknown key '{key}'; valid keys: {', '.join(f'{section}.{n}' for n in names)}")
    # Strings stay verbatim (YAML would turn 'yes' into True); other types parse as YAML scalars.
    if _type_name(names[name].type) == "str":
        return section, name, raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return section, name, value


def deep_merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, mapping by mapping; neither input is modified."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------------------------------------
# Presets (src/brlm/presets/NAME.yaml: config, scales, default_scale, optionally runs) and files

def list_presets() -> list[str]:
    root = resources.files("brlm") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    path = resources.files("brlm") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset '{name}' does not exist; available: {', '.join(list_presets())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "config" not in data:
        raise ConfigError(f"preset file {name}.yaml: expected keys 'config' and optionally 'scales'")
    return data


def _variants(name: str, data: dict[str, Any]) -> dict[str, Any]:
    runs = data.get("runs") or {}
    if not isinstance(runs, dict):
        raise ConfigError(f"preset file {name}.yaml: 'runs' must map variant names to config overrides")
    return runs


def preset_variants(name: str) -> dict[str, Any]:
    """The preset's `runs:` section: variant name -> overrides of the preset's config ({} if none)."""
    return _variants(name, read_preset(name))


def preset_sections(name: str, scale: str | None, variant: str | None = None) -> tuple[dict[str, Any], str]:
    """The preset's config dict with its scale (and a variant with its own scale) applied, and the scale used."""
    data = read_preset(name)
    if variant is not None:
        runs = _variants(name, data)
        if variant not in runs:
            raise ConfigError(f"--variant {variant!r}: preset '{name}' has variants {', '.join(runs) or '(none)'}")
    scales = data.get("scales") or {}
    scale = scale or data.get("default_scale") or "default"
    if scale != "default" and scale not in scales:
        raise ConfigError(f"--scale {scale!r}: preset '{name}' has scales {', '.join(sorted(scales)) or '(none)'}")
    merged = deep_merge(data["config"] or {}, scales.get(scale) or {})
    if variant is not None:
        v = dict(runs[variant] or {})
        v_scales = v.pop("scales", None) or {}
        base_preset = v.pop("preset", None)
        if base_preset is not None:
            # A variant that names another preset (the ladder: v1 ... v6) starts from that preset at
            # the same scale; this preset's config (the shared corpus, budget, eval) goes over it.
            base, _ = preset_sections(str(base_preset), scale)
            merged = deep_merge(base, merged)
        merged = deep_merge(deep_merge(merged, v), v_scales.get(scale) or {})
    return merged, scale


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {p}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "parse error"
        raise ConfigError(f"--config {p}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of sections")
    return data


# ---------------------------------------------------------------------------------------------
# The precedence rule

def resolve(
    root: type[R],
    preset: str | None = None,
    scale: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    variant: str | None = None,
) -> R:
    """defaults < preset < its scale < variant < the variant's scale < overrides (later ones win).

    A config file replaces the preset layers (its own `preset`/`scale` labels are kept; `scale`
    only relabels it). With neither a preset nor a file, the overrides apply to the defaults.
    """
    if variant is not None and (preset is None or config_file is not None):
        raise ConfigError("--variant needs a preset")
    if config_file is not None:
        base = read_config_file(config_file)
        origin = f"--config {config_file}"
        if scale is not None:
            base["scale"] = scale
    elif preset is not None:
        sections, used_scale = preset_sections(preset, scale, variant)
        base = {"preset": preset, "scale": used_scale, **sections}
        origin = f"preset {preset} variant {variant}" if variant else f"preset {preset} (scale {used_scale})"
    else:
        base, origin = {}, "defaults"
    merged: dict[str, Any] = dict(base)
    for text in overrides or []:
        section, name, value = parse_override(root, text)
        merged[section] = {**merged.get(section, {}), name: value}
        if variant is None:  # a variant's errors name the preset and variant only
            origin = f"{origin} + --set"
    return config_from_dict(root, merged, origin)
