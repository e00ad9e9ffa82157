"""The command line as a new user meets it: help when bare, the closest flag or command on a typo,
and no abbreviated flags."""

from __future__ import annotations

import pytest

from headstart.cli.main import main


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_bare_headstart_prints_its_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: headstart" in out and "train" in out and "predict" in out


def test_a_mistyped_command_gets_the_closest_one(capsys):
    assert "did you mean 'train'?" in _error(["trian", "data"], capsys)


def test_a_mistyped_flag_gets_the_closest_one_under_its_commands_usage(capsys):
    err = _error(["train", "data", "--ouput", "m"], capsys)
    assert err.startswith("usage: headstart train") and "--ouput: did you mean --out?" in err


@pytest.mark.parametrize("argv, flag", [(["export", "m", "--form", "onnx"], "--format"),
                                        (["predict", "m", "x.jpg", "--form", "csv"], "--format")])
def test_an_abbreviated_flag_is_refused_not_guessed(argv, flag, capsys):
    assert f"did you mean {flag}?" in _error(argv, capsys)
