"""`data shards --split-file`: the official HDTF test/excluded ids and CREMA-D test speakers of `datasets/`
decide the test split; CREMA-D splits are speaker-disjoint; another split file rebuilds the shards."""
from __future__ import annotations

import logging

import pytest

from dawn_train.cli import main
from dawn_train.data.shards import load_manifest, write_shards
from dawn_train.data.splits import SplitLists, assign_splits, speaker_entry, speaker_of
from tests.conftest import REPO
from tests.data.conftest import copy_videos, tar_metas

HDTF = REPO / "datasets" / "hdtf"
CREMA = REPO / "datasets" / "crema"
HDTF_LISTS = [HDTF / "test_ids.txt", HDTF / "excluded_ids.txt"]


def videos_by_split(out) -> dict[str, set]:
    """Video ids (prepared file names) of the tars of each split, read from the samples' json; asserts that the
    manifest lists the same."""
    found: dict[str, set] = {}
    for path in sorted(out.glob("*.tar")):
        found.setdefault(path.name.split("-")[0], set()).update(m["source_file"][:-4] for m in tar_metas(path))
    manifest = load_manifest(out)
    listed = {split: {v for shard in info["shards"] for v in shard["videos"]} for split, info in manifest["splits"].items()}
    assert {k: v for k, v in listed.items() if v} == found
    return found


def test_official_lists_read():
    lists = SplitLists.read([*HDTF_LISTS, CREMA / "test_speakers.txt"])
    assert len(lists.test_videos) == 41 and "WRA_MarcoRubio_000" in lists.test_videos
    assert lists.excluded_videos == {"WDA_DanKildee_000", "WDA_PatrickLeahy1_000", "WRA_KristiNoem2_000"}
    assert lists.test_speakers == {"1064", "1076", "1088", "1090", "1091"}  # Diffused-Heads s64 = CREMA-D actor 1064
    assert set(lists.describe()["files"]) == {"test_ids.txt", "excluded_ids.txt", "test_speakers.txt"}
    assert speaker_entry("s7") == "1007" and speaker_entry("1007") == "1007" and speaker_of("1007_DFA_ANG_XX") == "1007"


def test_split_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/test_ids.txt"):
        SplitLists.read([tmp_path / "nowhere" / "test_ids.txt"])
    odd = tmp_path / "my split.v2.txt"
    odd.write_text("a\n")
    with pytest.raises(ValueError, match="my split.v2.txt: a split file is named after what it lists: test_ids.txt"):
        SplitLists.read([odd])


def test_speaker_splits_are_disjoint_for_every_seed():
    """All of CREMA-D's naming: 91 actors x 12 sentences; the official test speakers never leave test, no actor
    is in two splits, and val is drawn by actor."""
    ids = [f"{actor}_{sentence}_ANG_XX" for actor in range(1001, 1092) for sentence in ("DFA", "IEO", "ITS")]
    lists = SplitLists.read([CREMA / "test_speakers.txt"])
    for seed in range(5):
        splits, record = assign_splits(ids, 0.1, seed, lists)
        speakers = {split: {speaker_of(v) for v in videos} for split, videos in splits.items()}
        assert speakers["test"] == {"1064", "1076", "1088", "1090", "1091"}
        assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"]
                    or speakers["val"] & speakers["test"])
        assert len(speakers["val"]) == 9 and sum(map(len, splits.values())) == len(ids)
        assert record["unit"] == "speaker" and record["not_found"] == []


def test_hdtf_test_ids_go_to_test_shards_and_excluded_ones_nowhere(synth_raw, tmp_path, caplog):
    names = {"synth00000": "RD_Radio14_000", "synth00001": "WRA_MarcoRubio_000", "synth00002": "WDA_DanKildee_000",
             "synth00003": "WDA_Train_A_000", "synth00004": "WDA_Train_B_000", "synth00005": "WRA_Train_C_001"}
    src, out = tmp_path / "hdtf prepared.v1", tmp_path / "shards"
    copy_videos(synth_raw, src, names)
    caplog.set_level(logging.WARNING, logger="dawn_train")
    args = ["data", "shards", "--src", str(src), "--out", str(out), "--val-fraction", "0.25", "--chunk-frames", "0",
            "--split-file", str(HDTF_LISTS[0]), "--split-file", str(HDTF_LISTS[1])]
    assert main(args) == 0
    found = videos_by_split(out)
    assert found["test"] == {"RD_Radio14_000", "WRA_MarcoRubio_000"}
    assert len(found["val"]) == 1 and len(found["train"]) == 2
    assert "WDA_DanKildee_000" not in set().union(*found.values())
    record = load_manifest(out)["split"]
    assert record["excluded"] == ["WDA_DanKildee_000"] and record["unit"] == "video"
    assert set(record["files"]) == {"test_ids.txt", "excluded_ids.txt"}
    assert len(record["not_found"]) == 39 + 2 and "match no prepared video" in caplog.text

    caplog.clear()  # without the excluded list: another build, rebuilt from scratch, no old tar left
    write_shards(src, out, val_fraction=0.25, chunk_frames=0, split_files=HDTF_LISTS[:1], progress=False)
    assert "rebuilding from scratch" in caplog.text and "split_files" in caplog.text
    found = videos_by_split(out)
    assert "WDA_DanKildee_000" in found["train"] | found["val"]
    assert found["test"] == {"RD_Radio14_000", "WRA_MarcoRubio_000"}


def test_crema_shards_are_speaker_disjoint(synth_raw, tmp_path):
    names = {"synth00000": "1064_DFA_ANG_XX", "synth00001": "1064_IEO_HAP_HI", "synth00002": "1001_DFA_ANG_XX",
             "synth00003": "1001_ITS_SAD_XX", "synth00004": "1002_DFA_NEU_XX", "synth00005": "1002_IEO_SAD_LO",
             "synth00006": "1003_TIE_ANG_XX", "synth00007": "1004_WSI_FEA_XX"}
    src, out = tmp_path / "crema", tmp_path / "shards"
    copy_videos(synth_raw, src, names)
    write_shards(src, out, val_fraction=0.25, chunk_frames=0, split_files=[CREMA / "test_speakers.txt"], seed=2,
                 progress=False)
    speakers = {split: {speaker_of(v) for v in videos} for split, videos in videos_by_split(out).items()}
    assert speakers["test"] == {"1064"} and len(speakers["val"]) == 1
    assert not (speakers["train"] & speakers["val"]) and speakers["train"] | speakers["val"] == {"1001", "1002",
                                                                                                   "1003", "1004"}
    assert load_manifest(out)["split"]["unit"] == "speaker"
