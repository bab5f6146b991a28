"""`dawn-train data prep` as a run: failures listed and the run goes on, reruns do no work, slices split
the inputs exactly once, and the prepared directory is what `data shards` reads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dawn_train.cli import main
from dawn_train.data.prep.failures import FAILURES, read_failures
from dawn_train.data.prep.run import list_inputs, parse_slice, slice_of
from tests.conftest import require_module

from .conftest import SIZE

require_module("mediapipe")

PREPARED = (".json", ".mp4", ".wav", ".npz")


def listing(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir())}


def test_bad_videos_are_listed_with_their_reason_and_the_run_goes_on(prepared):
    failed = read_failures(prepared)
    assert set(failed) == {"empty_room", "broken", "silent_film", "short_take", "walked_off"}
    assert failed["empty_room"]["reason"] == "no face found"
    assert failed["short_take"]["reason"] == "too short: 15 frames (0.60 s at 25 fps), need 1 s"
    assert failed["walked_off"]["reason"].startswith("face lost for 15 frames (0.40-1.00 s; at most 12 are filled in)")
    assert failed["broken"]["reason"].startswith("corrupt or unreadable file")
    assert failed["silent_film"]["reason"] == "no audio stream"
    assert all((prepared / f"astro talk{suffix}").is_file() for suffix in PREPARED)
    assert not list(prepared.glob("*.tmp*"))


def test_rerun_does_no_work(prepared, raw_dir, capsys):
    before = listing(prepared)
    assert main(["data", "prep", "--src", str(raw_dir), "--out", str(prepared), "--size", str(SIZE), "--quiet"]) == 0
    assert "0 done, 6 skipped" in capsys.readouterr().out
    assert listing(prepared) == before  # nothing rewritten, failures.jsonl not appended


def test_slices_cover_every_input_once(raw_dir, tmp_path, capsys):
    inputs = list_inputs(raw_dir)
    for count in (1, 2, 3, 5):
        parts = [slice_of(inputs, index, count) for index in range(count)]
        assert sorted(p for part in parts for p in part) == inputs
    assert parse_slice("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="--slice"):
            parse_slice(bad)
    # two slices of a list file into one folder: each video handled by exactly one of them
    only_bad = tmp_path / "list.txt"
    only_bad.write_text("# the three that fail fast\n" + "".join(f"{raw_dir / n}.mp4\n" for n in
                                                              ("empty_room", "broken", "silent_film")))
    out = tmp_path / "out"
    for task in range(2):  # every video a task tried failed: a warning, and exit 0 (a shards job may wait on afterok)
        assert main(["data", "prep", "--list", str(only_bad), "--out", str(out), "--slice", f"{task}/2", "--quiet"]) == 0
        assert "videos of slice" in capsys.readouterr().err
    lines = [json.loads(line)["id"] for line in (out / FAILURES).read_text().splitlines()]
    assert sorted(lines) == ["broken", "empty_room", "silent_film"]
    # a rerun skips the listed failures: nothing tried, nothing failed
    assert main(["data", "prep", "--list", str(only_bad), "--out", str(out), "--quiet"]) == 0


def test_duplicate_ids_and_missing_inputs_are_errors(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "v1.mp4").write_bytes(b"x")
    (tmp_path / "b" / "v1.mov").write_bytes(b"x")
    assert main(["data", "prep", "--src", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "two inputs have the video id 'v1'" in capsys.readouterr().err
    assert main(["data", "prep", "--src", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 1


def test_prepared_videos_make_valid_shards(prepared, tmp_path):
    from dawn_train.data.shards import inspect_shards, write_shards

    manifest = write_shards(prepared, tmp_path / "shards", val_fraction=0.0, chunk_frames=50, progress=False)
    assert manifest["frame_size"] == SIZE and manifest["splits"]["train"]["samples"] == 3  # 125 frames -> 3 chunks
    report = inspect_shards(tmp_path / "shards", progress=False)
    assert not report["bad"] and report["splits"]["train"]["frames"] == 125
