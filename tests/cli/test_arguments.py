"""Shared argparse types: bad values are refused with their flag before any work."""
import argparse

import pytest

from dawn_train.cli import main
from dawn_train.cli.arguments import seed_arg


def test_seed_arg():
    assert seed_arg("0") == 0 and seed_arg("1234") == 1234
    for text in ("-3", "1.5", "abc"):
        with pytest.raises(argparse.ArgumentTypeError, match="a seed is a whole number >= 0"):
            seed_arg(text)


@pytest.mark.parametrize("command", [["data", "synth", "--out", "x"], ["data", "shards", "--src", "x", "--out", "y"],
                                     ["data", "probe", "--out", "x.pt"]])
def test_a_negative_seed_is_refused_by_its_flag(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([*command, "--seed", "-3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seed: a seed is a whole number >= 0, got -3" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was started
