"""Exit codes of `dawn-train`: a known failure is one line and exit 1, a usage error exit 2, a bug a traceback;
`--debug` and DAWN_DEBUG=1 show the traceback of known failures too (dawn_train/launch/failures.py)."""
from __future__ import annotations

import multiprocessing
import re
import shutil
import subprocess
import sys
import warnings

import pytest

from dawn_train.cli import main
from dawn_train.data.clips import lfg_pair
from dawn_train.data.schema import STAGE_KEYS, SchemaError
from dawn_train.data.shards import load_manifest, shard_urls
from dawn_train.data.skips import TooManyBadSamples
from dawn_train.data.stream import EpochDataLoader, make_pipeline
from dawn_train.launch.failures import BUG_HINT, classify, debug_requested
from dawn_train.stages.config_errors import ConfigError

from .conftest import REPO, dawn_env


def dawn(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dawn_train.cli", *args], cwd=REPO, env={**dawn_env(), **env},
                          capture_output=True, text=True, timeout=120)


def test_known_failure_is_one_line_and_exit_1_usage_error_exit_2(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no run.v1"
    proc = dawn(["report", str(missing), "--out", str(tmp_path / "r")], DAWN_DEBUG="")  # the installed entry point
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("dawn-train: error: ") and str(missing) in line

    monkeypatch.delenv("DAWN_DEBUG", raising=False)
    assert main(["report", str(missing), "--out", str(tmp_path / "r"), "--debug"]) == 1
    monkeypatch.setenv("DAWN_DEBUG", "1")
    assert main(["report", str(missing), "--out", str(tmp_path / "r")]) == 1
    for err in capsys.readouterr().err.split("dawn-train: error: ")[:2]:
        assert "Traceback (most recent call last)" in err  # each followed by the same one line
    with pytest.raises(SystemExit) as usage:
        main(["report"])  # argparse: a usage error
    assert usage.value.code == 2


def test_debug_flag_anywhere_and_from_the_environment(monkeypatch):
    monkeypatch.delenv("DAWN_DEBUG", raising=False)
    assert debug_requested(["--debug", "fit", "-c", "a.yaml"]) == (True, ["fit", "-c", "a.yaml"])
    assert debug_requested(["report", "x", "--debug"]) == (True, ["report", "x"])
    assert debug_requested(["report", "x"]) == (False, ["report", "x"])
    monkeypatch.setenv("DAWN_DEBUG", "1")
    assert debug_requested(["report", "x"])[0]


def test_the_error_our_code_raised_is_reported_through_wrappers(tmp_path):
    try:
        try:
            load_manifest(tmp_path / "no shards")
        except FileNotFoundError as exc:  # as jsonargparse wraps an error raised while it builds a class
            raise ValueError("Does not validate against any of the Union subtypes") from exc
    except ValueError as wrapped:
        code, message = classify(wrapped)
    assert code == 1 and "no shards" in message and "Union" not in message
    assert classify(ConfigError("trainer.max_stepz: unknown key")) == (2, "trainer.max_stepz: unknown key")
    assert classify(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None  # a bug: traceback
    try:
        try:
            raise ValueError("bad input")
        except ValueError:
            raise RuntimeError("a bug while handling it")
    except RuntimeError as bug:
        assert classify(bug) is None


def test_an_error_from_a_dataloader_worker_keeps_its_own_message(synth_shards, tmp_path):
    broken = tmp_path / "broken shards.v1"
    shutil.copytree(synth_shards, broken)
    for tar in sorted(broken.glob("train-*.tar"))[:3]:
        tar.write_bytes(tar.read_bytes()[:3000])
    pipeline = make_pipeline(shard_urls(broken, "train"), lfg_pair, STAGE_KEYS["lfg"], 1, train=True,
                             batches_per_worker=100, workers=1)
    loader = EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False, num_workers=1)
    with warnings.catch_warnings(), pytest.raises(TooManyBadSamples) as raised:
        warnings.simplefilter("ignore")
        list(loader)
    assert "Original Traceback" in str(raised.value)  # torch re-raises it with the worker's traceback
    code, message = classify(raised.value)
    assert code == 1 and re.match(r"\d+ of \d+ samples read were bad", message)
    assert "max_skip_fraction=0.1" in message and "Traceback" not in message and "train-000000.tar" in message


def test_a_value_error_from_inside_torch_is_a_bug_with_its_traceback(tmp_path, monkeypatch, capsys):
    """Only dawn_train's own error types, and ValueError/OSError that dawn_train code raised, are known failures: a
    ValueError raised inside torch (a shape check) keeps its traceback, with a one-line hint after it."""
    import torch

    try:
        torch.nn.functional.binary_cross_entropy(torch.zeros(2), torch.zeros(3))  # ValueError in torch's code
    except ValueError as exc:
        assert classify(exc) is None and exc.__notes__ == [BUG_HINT]
    try:
        load_manifest(tmp_path / "no shards")  # our code (through pathlib): known
    except FileNotFoundError as exc:
        assert classify(exc)[0] == 1
    assert classify(SchemaError("shard x: bad key")) == (1, "shard x: bad key")  # our own type, wherever raised

    # through the command line: `main` lets it through (Python prints the traceback), the hint is its last line
    import traceback

    import dawn_train.tracking.report as report

    monkeypatch.delenv("DAWN_DEBUG", raising=False)
    monkeypatch.setattr(report, "build_report", lambda *a, **k: torch.nn.functional.binary_cross_entropy(
        torch.zeros(2), torch.zeros(3)))
    with pytest.raises(ValueError) as raised:
        main(["report", str(tmp_path), "--out", str(tmp_path / "r")])
    printed = "".join(traceback.format_exception(raised.value))
    assert "dawn-train: error:" not in capsys.readouterr().err
    assert printed.startswith("Traceback (most recent call last)") and "torch/nn/functional.py" in printed
    assert printed.strip().splitlines()[-1] == BUG_HINT
