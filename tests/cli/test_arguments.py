"""Shared argparse types: bad values are refused with their flag before any work."""
import argparse

import pytest

from dawn_train.cli import main
from dawn_train.cli.arguments import non_negative_float, non_negative_int, positive_float, positive_int, seed_arg


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


def test_bounded_numbers():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    assert positive_float("0.5") == 0.5 and non_negative_float("0") == 0.0
    for parse, text, why in [(positive_int, "0", "must be >= 1"), (non_negative_int, "-1", "must be >= 0"),
                             (positive_float, "0", "must be > 0"), (non_negative_float, "-0.1", "must be >= 0"),
                             (positive_int, "2.5", "a whole number"), (positive_float, "x", "a finite number"),
                             (positive_float, "nan", "a finite number"), (positive_int, 2.7, "a whole number"),
                             (positive_int, True, "a number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse(text)


@pytest.mark.parametrize("command, flag, value", [
    (["eval", "--ckpt", "a", "--lfg", "b", "--shards", "c"], "--max-frames", "0"),
    (["eval", "--ckpt", "a", "--lfg", "b", "--shards", "c"], "--steps", "0"),
    (["eval-lfg", "--lfg", "b", "--shards", "c"], "--max-frames", "0"),
    (["generate", "--image", "a.png", "--audio", "b.wav", "--out", "c.mp4"], "--steps", "0"),
    (["generate", "--image", "a.png", "--audio", "b.wav", "--out", "c.mp4"], "--decode-chunk", "0"),
    (["generate", "--image", "a.png", "--audio", "b.wav", "--out", "c.mp4"], "--chunk-seconds", "-2"),
    (["data", "shards", "--src", "x", "--out", "y"], "--chunk-frames", "-3"),
    (["data", "probe", "--out", "x.pt"], "--steps", "0"),
    (["bench", "cases"], "--repeats", "0"),
])
def test_a_count_out_of_range_is_refused_by_its_flag(command, flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([*command, flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, why", [("steps: 0\n", "steps: must be >= 1, got 0"),
                                       ("decode_chunk: -4\n", "decode_chunk: must be >= 1"),
                                       ("stepz: 3\n", "unknown key(s) ['stepz']")])
def test_a_generate_config_value_out_of_range_is_a_usage_error_naming_the_file(text, why, tmp_path, capsys):
    config = tmp_path / "my configs.v2" / "generate.yaml"
    config.parent.mkdir()
    config.write_text(text)
    code = main(["generate", "--config", str(config), "--image", "a.png", "--audio", "b.wav",
                 "--out", str(tmp_path / "c.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and f"{config}: {why}" in err and "Traceback" not in err
