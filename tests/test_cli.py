import importlib
import pkgutil

import pytest

import brlm.verbs
from brlm.cli import VERBS, main


def test_verb_table_matches_modules():
    # extrinsic is a sub-verb: `brlm eval extrinsic build|rescore` routes to brlm.verbs.extrinsic.main.
    modules = {m.name for m in pkgutil.iter_modules(brlm.verbs.__path__)} - {"common", "extrinsic"}
    assert modules == set(VERBS)
    for module, desc in VERBS.values():
        mod = importlib.import_module(module)
        assert callable(mod.main) and desc


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert f"brlm {verb}" in capsys.readouterr().out


def test_top_level_help_lists_verbs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_unknown_verb_is_one_line_exit_2(capsys):
    assert main(["fly"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown verb 'fly'" in err


def test_unknown_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--nope" in err


def test_unknown_set_key_is_one_line_exit_2(capsys, tmp_path):
    assert main(["run", "demo", "--runs-dir", str(tmp_path), "--set", "train.learning_rate=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "train.learning_rate" in err and "valid keys" in err and "train.lr" in err


def test_list_keys(capsys):
    assert main(["run", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "model.block_size" in out
