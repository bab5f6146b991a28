"""`dawn-train data prep` tells a fault of one video (listed in failures.jsonl, the run goes on) from a problem
of the machine or the code (the run stops with one line and lists nothing, so a rerun retries those videos).
No mediapipe needed: the face-mesh import and `prepare_video` are replaced."""
from __future__ import annotations

import errno
import json

import pytest

from dawn_train.cli import main
from dawn_train.data.prep import run
from dawn_train.data.prep.failures import FAILURES, PrepFailure
from dawn_train.data.prep.landmarks import PrepExtraMissing


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in ("a_bad", "b_crash", "c_later"):
        (folder / f"{name}.mp4").write_bytes(b"not looked at")
    return folder


def one_error_line(err: str) -> str:
    """The one `dawn-train: error:` line, the last of stderr (warnings about listed videos may come before)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and sum(line.startswith("dawn-train: error:") for line in lines) == 1, err
    assert lines[-1].startswith("dawn-train: error:"), err
    return lines[-1]


def test_missing_mediapipe_stops_before_any_video(raw, tmp_path, monkeypatch, capsys):
    def missing():
        raise PrepExtraMissing("face detection and landmarks need mediapipe: pip install 'dawn-train[prep]'")

    attempted = []
    monkeypatch.setattr(run, "load_face_mesh_module", missing)
    monkeypatch.setattr(run, "prepare_video", lambda source, *args: attempted.append(source))
    out = tmp_path / "out"
    assert main(["data", "prep", "--src", str(raw), "--out", str(out), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("dawn-train: error: data prep needs the prep extra") and "pip install 'dawn-train[prep]'" in line
    assert not attempted and not (out / FAILURES).exists()


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), MemoryError(),
                                   KeyError("a bug")], ids=["disk-full", "memory", "bug"])
def test_machine_problems_stop_the_run_and_are_not_listed(raw, tmp_path, monkeypatch, capsys, error):
    attempted = []

    def prepare(source, out, video_id, options):
        attempted.append(video_id)
        if video_id == "a_bad":
            raise PrepFailure("no face found")
        if video_id == "b_crash" and error is not None:
            raise error
        (out / f"{video_id}.json").write_text("{}")  # what `is_prepared` looks at

    monkeypatch.setattr(run, "load_face_mesh_module", lambda: None)
    monkeypatch.setattr(run, "prepare_video", prepare)
    out = tmp_path / "out"
    args = ["data", "prep", "--src", str(raw), "--out", str(out), "--quiet"]
    assert main(args) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"prep stopped at {raw / 'b_crash.mp4'}: {type(error).__name__}" in line and "not listed" in line
    assert attempted == ["a_bad", "b_crash"]  # stopped: c_later was not tried
    assert [json.loads(text)["id"] for text in (out / FAILURES).read_text().splitlines()] == ["a_bad"]
    # the problem fixed, a rerun does the crashed video and the rest, and skips the listed one
    error = None
    assert main(args) == 0
    assert "2 done, 1 skipped" in capsys.readouterr().out
    assert attempted[2:] == ["b_crash", "c_later"]


def test_a_problem_in_a_worker_process_reaches_the_cli_as_one_line(tmp_path):
    """With --workers the video runs in a spawned process: its PrepStopped comes back whole (pickled) and the
    CLI's classifier reports it as a known failure, not as a bug."""
    from multiprocessing import get_context

    from dawn_train.data.prep.failures import PrepStopped
    from dawn_train.data.prep.video import PrepOptions
    from dawn_train.launch.failures import classify

    with get_context("spawn").Pool(1) as pool:
        with pytest.raises(PrepStopped, match="^prep stopped at None: AttributeError") as raised:
            list(pool.imap_unordered(run._prepare_one, [(None, tmp_path, PrepOptions())]))
    code, message = classify(raised.value)
    assert code == 1 and message.startswith("prep stopped at None: AttributeError") and "\n" not in message
