import dataclasses

import pytest

from brlm.config import (
    SECTIONS,
    RunConfig,
    base,
    config_from_dict,
    list_presets,
    load_config,
    read_preset,
)
from brlm.errors import ConfigError


def test_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.model.n_embd % cfg.model.n_head == 0


@pytest.mark.parametrize("preset", list_presets())
def test_every_shipped_preset_and_scale_parses(preset):
    from brlm.config.base import resolve
    from brlm.stages import preset_workflow, workflow_root

    root = workflow_root(preset_workflow(preset))  # each preset with its workflow's own root config
    scales = ["default"] + list((read_preset(preset).get("scales") or {}).keys())
    for scale in scales:
        cfg = resolve(root, preset=preset, scale=None if scale == "default" else scale)
        assert cfg.preset == preset


def test_demo_scales_differ():
    tiny = load_config(preset="demo", scale="tiny")
    small = load_config(preset="demo")
    assert small.scale == "small" and tiny.scale == "tiny"
    assert tiny.model.n_embd < small.model.n_embd


def test_overrides_are_typed():
    cfg = load_config(preset="demo", overrides=["train.lr=3e-4", "model.n_layer=3", "model.bias=false", "data.split_salt=yes"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.n_layer == 3 and isinstance(cfg.model.n_layer, int)
    assert cfg.model.bias is False
    assert cfg.data.split_salt == "yes"  # strings stay verbatim, not YAML booleans


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.nope=1", "valid keys: train.batch_size"),
        ("nope.lr=1", "unknown key 'nope.lr'"),
        ("model.n_layer=abc", "model.n_layer='abc': expected an integer"),
        ("train.lr=-1", "train.lr=-1.0: expected a number > 0"),
        ("model.n_embd=33", "model.n_embd=33: expected a multiple of model.n_head"),
        ("train.lr", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(preset="demo", overrides=[override])
    assert fragment in str(e.value)


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="available: .*demo"):
        load_config(preset="nope")


def test_unknown_scale():
    with pytest.raises(ConfigError, match="--scale 'huge'"):
        load_config(preset="demo", scale="huge")


def test_yaml_round_trip(tmp_path):
    cfg = load_config(preset="demo", scale="tiny", overrides=["train.max_steps=7"])
    p = tmp_path / "config.yaml"
    p.write_text(cfg.to_yaml())
    again = load_config(config_file=p)
    assert again == cfg


def test_config_file_unknown_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  n_layers: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'model.n_layers'"):
        load_config(config_file=p)


def test_config_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(config_file=tmp_path / "none.yaml")


def test_every_field_has_help():
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help line"


def test_section_hash_tracks_changes():
    a = config_from_dict({"data": {"min_doc_chars": 10}})
    b = config_from_dict({"data": {"min_doc_chars": 11}})
    assert a.section_hash("data") != b.section_hash("data")
    assert a.section_hash("model") == b.section_hash("model")


def test_precedence_defaults_preset_scale_variant_set(monkeypatch, tmp_path):
    """One rule for any root config: defaults < preset < scale < variant < variant's scale < --set."""
    # load_config is resolve(RunConfig, ...): the pretraining root goes through the same function.
    assert load_config(preset="demo", scale="tiny", overrides=["train.lr=3e-4"]) == base.resolve(
        RunConfig, "demo", "tiny", overrides=["train.lr=3e-4"])

    @dataclasses.dataclass
    class Toy:
        a: int = base.setting(0, "default only")
        b: int = base.setting(0, "preset")
        c: int = base.setting(0, "scale")
        d: int = base.setting(0, "variant")
        e: int = base.setting(0, "variant's scale")
        f: int = base.setting(0, "--set")

    @dataclasses.dataclass
    class ToyRoot(base.RootConfig):
        toy: Toy = dataclasses.field(default_factory=Toy)

    preset = {
        "config": {"toy": {"b": 1, "c": 1, "d": 1, "e": 1, "f": 1}},
        "scales": {"tiny": {"toy": {"c": 2, "d": 2, "e": 2, "f": 2}}},
        "runs": {"v": {"toy": {"d": 3, "e": 3, "f": 3}, "scales": {"tiny": {"toy": {"e": 4, "f": 4}}}}},
    }
    monkeypatch.setattr(base, "read_preset", lambda name: preset)
    cfg = base.resolve(ToyRoot, "toy", "tiny", overrides=["toy.f=9", "toy.f=5"], variant="v")
    assert (cfg.preset, cfg.scale) == ("toy", "tiny")
    assert dataclasses.astuple(cfg.toy) == (0, 1, 2, 3, 4, 5)  # each layer wins over the one before
    no_variant = base.resolve(ToyRoot, "toy", "tiny", overrides=["toy.f=5"])
    assert dataclasses.astuple(no_variant.toy) == (0, 1, 2, 2, 2, 5)
    assert dataclasses.astuple(base.resolve(ToyRoot, "toy").toy) == (0, 1, 1, 1, 1, 1)
    assert base.resolve(ToyRoot, overrides=["toy.a=7"]).toy.a == 7
    # A config file stands in for the preset layers; --set still wins over it.
    p = tmp_path / "config.yaml"
    p.write_text(cfg.to_yaml())
    again = base.resolve(ToyRoot, config_file=p, overrides=["toy.a=6"])
    assert dataclasses.astuple(again.toy) == (6, 1, 2, 3, 4, 5) and again.scale == "tiny"
