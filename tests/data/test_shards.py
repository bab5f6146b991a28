import json
import logging
import os
import re
import shutil
import tarfile

import numpy as np
import pytest

from dawn_train.cli import main
from dawn_train.data import schema
from dawn_train.data.audio import read_wav, write_wav
from dawn_train.data.datamodule import LFGDataModule
from dawn_train.data.shards import (
    BUILD,
    FAILURES,
    MANIFEST,
    check_shards_match,
    inspect_shards,
    load_manifest,
    shard_urls,
    write_shards,
)
from dawn_train.data.splits import split_videos
from tests.data.conftest import audio_only_mp4, copy_videos, corrupt_member, raw_samples, rewrite_tar, tar_metas


def shard_members(path):
    with tarfile.open(path) as tar:
        return [m.name for m in tar]


def test_manifest_counts_equal_actual_counts(synth_shards):
    manifest = load_manifest(synth_shards)
    assert manifest["feature"]["type"] == "logmel" and manifest["feature"]["dim"] == 80
    for split, info in manifest["splits"].items():
        samples = frames = 0
        for shard in info["shards"]:
            with tarfile.open(synth_shards / shard["name"]) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        samples += 1
                        frames += json.loads(tar.extractfile(member).read())["n_frames"]
        assert (samples, frames) == (info["samples"], info["frames"])


def test_split_by_video_never_overlaps(synth_shards):
    manifest = load_manifest(synth_shards)
    videos = {split: {v for s in info["shards"] for v in s["videos"]} for split, info in manifest["splits"].items()}
    assert videos["train"] and videos["val"] and not videos["train"] & videos["val"]
    split = split_videos([f"v{i}" for i in range(100)], 0.1, seed=0)
    assert len(split["val"]) == 10 and not set(split["val"]) & set(split["train"])


def test_sample_contains_every_contract_key(synth_shards):
    names = shard_members(synth_shards / "train-000000.tar")
    suffixes = sorted(schema.split_member(n)[1] for n in names)
    assert suffixes == sorted(["frames.mp4", "audio.wav", "audio_feat.npy", "pose.npy", "blink.npy", "face_box.npy",
                               "mouth_lmk.npy", "eye_lmk.npy", "json"])


def test_eye_landmarks_are_optional_members(synth_shards, tmp_path):
    """Shards without `eye_lmk.npy` (written before it existed) still feed the LFG: its pairs carry no eye points,
    and a batch mixing both kinds drops the field; a missing required member is still a bad sample."""
    from dawn_train.data.clips import collate, lfg_pair
    from dawn_train.data.sample import parse_sample

    rng = np.random.default_rng(0)
    with_eyes = lfg_pair(parse_sample(raw_samples(synth_shards / "train-000000.tar")[0], schema.STAGE_KEYS["lfg"]), rng)
    assert with_eyes["source_eye_lmk"].shape == (12, 2) and with_eyes["driving_eye_lmk"].dtype == np.float32
    raw = raw_samples(synth_shards / "train-000000.tar")[0]
    del raw[schema.EYE_LMK]
    parsed = parse_sample(raw, schema.STAGE_KEYS["lfg"])
    assert schema.EYE_LMK not in parsed and schema.MOUTH_LMK in parsed
    without = lfg_pair(parsed, rng)
    assert "source_eye_lmk" not in without and "source_mouth_lmk" in without
    batch = collate([with_eyes, without])
    assert "source_eye_lmk" not in batch and batch["source"].shape[0] == 2
    del raw[schema.MOUTH_LMK]
    with pytest.raises(schema.SchemaError, match="missing mouth_lmk.npy"):
        parse_sample(raw, schema.STAGE_KEYS["lfg"])


def test_rerun_keeps_finished_shards_and_replaces_partial_ones(synth_raw, tmp_path):
    out = tmp_path / "shards"
    write_shards(synth_raw, out, val_fraction=0.25, samples_per_shard=2, progress=False)
    finished = out / "train-000000.tar"
    stamp = finished.stat().st_mtime_ns
    # an interrupted run: one shard missing, a stray temporary file, no manifest
    (out / "train-000001.tar").unlink()
    (out / "train-000001.tar.tmp").write_bytes(b"half a shard")
    (out / MANIFEST).unlink()
    manifest = write_shards(synth_raw, out, val_fraction=0.25, samples_per_shard=2, progress=False)
    assert finished.stat().st_mtime_ns == stamp
    assert (out / "train-000001.tar").exists() and (out / MANIFEST).exists()
    assert manifest["splits"]["train"]["samples"] == 6


def test_inspect_reports_bad_samples_by_name(synth_shards, tmp_path):
    broken = tmp_path / "shards"
    shutil.copytree(synth_shards, broken)
    # drop pose.npy of the sample in train-000001.tar
    path = broken / "train-000001.tar"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if not m.name.endswith("pose.npy")]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            tar.addfile(member, __import__("io").BytesIO(data))
    # truncate train-000002.tar in the middle
    shard = broken / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[: os.path.getsize(shard) // 2])
    report = inspect_shards(broken, progress=False)
    assert any("train-000001.tar" in b and "pose.npy" in b for b in report["bad"])
    assert any("train-000002.tar" in b for b in report["bad"])
    assert main(["data", "inspect", str(broken)]) == 1
    assert main(["data", "inspect", str(synth_shards)]) == 0


def test_cli_shards_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["data", "shards", "--src", str(tmp_path), "--out", str(tmp_path / "s")]) == 1  # a known failure
    assert "no prepared videos" in capsys.readouterr().err


def test_audio_feature_matches_audio(synth_raw, synth_shards):
    from dawn_train.data.audio import log_mel, read_wav

    with tarfile.open(synth_shards / "train-000000.tar") as tar:
        files = {schema.split_member(m.name)[1]: tar.extractfile(m).read() for m in tar}
    meta = json.loads(files["json"])
    feature = np.load(__import__("io").BytesIO(files["audio_feat.npy"]))
    audio = read_wav(synth_raw / f"{meta['video_id']}.wav")
    assert np.allclose(feature, log_mel(audio, meta["n_frames"]).astype(np.float16))


ODD_IDS = ["clip.001", "a b", "ünï côte", "x.y.z"]


def test_odd_directory_and_video_names_round_trip(synth_raw, tmp_path):
    """A dotted, spaced, unicode source directory (`mktemp -d` gives tmp.XXXX) and such video ids
    give safe keys; the json keeps the original names; inspect and the DataModule read every sample."""
    root = tmp_path / "tmp.Ab3 ü"
    originals = sorted(p.stem for p in synth_raw.glob("*.json"))[:4]
    copy_videos(synth_raw, root / "raw", dict(zip(originals, ODD_IDS)))
    manifest = write_shards(root / "raw", root / "shards", val_fraction=0.25, samples_per_shard=1, progress=False)
    assert manifest["dataset"] == "tmp.Ab3 ü"
    report = inspect_shards(root / "shards", progress=False)
    assert report["bad"] == [] and sum(c["samples"] for c in report["splits"].values()) == 4
    expected = {schema.sample_key("tmp.Ab3 ü", v, 0) for v in ODD_IDS}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/\d{4}", key) for key in expected)
    metas = [m for path in sorted((root / "shards").glob("*.tar")) for m in tar_metas(path)]
    assert {m["dataset"] for m in metas} == {"tmp.Ab3 ü"}
    assert sorted(m["source_file"] for m in metas) == sorted(f"{v}.mp4" for v in ODD_IDS)
    assert sorted(m["video_id"] for m in metas) == originals  # the prepared json's own id is kept too

    dm = LFGDataModule(str(root / "shards"), batch_size=1, num_workers=0, clips_per_epoch=3, shuffle_buffer=1)
    keys = [key for batch in dm.train_dataloader() for key in batch["key"]]
    keys += [key for batch in dm.val_dataloader() for key in batch["key"]]
    assert {key.rsplit(":", 1)[1] for key in keys} == expected


def videos_in_tars(out) -> dict[str, set]:
    return {path.name: {m["video_id"] for m in tar_metas(path)} for path in sorted(out.glob("*.tar"))}


def check_manifest_matches_tars(out) -> dict:
    """Every tar of `out` is in the manifest with the videos it really holds; no video in two splits.  A shard
    whose videos all failed stays an empty tar (a rerun knows it is done) that the manifest does not list."""
    manifest = load_manifest(out)
    listed = {s["name"]: set(s["videos"]) for info in manifest["splits"].values() for s in info["shards"]}
    assert {name: videos for name, videos in videos_in_tars(out).items() if videos} == listed
    train, val = ({v for s in manifest["splits"][split]["shards"] for v in s["videos"]} for split in ("train", "val"))
    assert train and val and not train & val
    return manifest


def test_rerun_with_other_seed_or_videos_rebuilds_from_scratch(synth_raw, tmp_path, caplog):
    src, out = tmp_path / "raw", tmp_path / "shards"
    copy_videos(synth_raw, src)
    first = write_shards(src, out, val_fraction=0.25, samples_per_shard=2, seed=0, progress=False)
    assert {"inputs_sha1", "options_sha1", "options"} <= set(first["build"]) and (out / BUILD).exists()
    caplog.set_level(logging.WARNING, logger="dawn_train")

    second = write_shards(src, out, val_fraction=0.25, samples_per_shard=2, seed=1, progress=False)
    assert "rebuilding from scratch" in caplog.text and "seed 0 -> 1" in caplog.text
    assert second["build"]["inputs_sha1"] == first["build"]["inputs_sha1"]
    assert second["build"]["options_sha1"] != first["build"]["options_sha1"]
    assert check_manifest_matches_tars(out)["splits"]["val"]["videos"] == 2

    caplog.clear()
    for suffix in (".json", ".mp4", ".wav", ".npz"):  # one video less, and fewer shards than before
        (src / f"synth00000{suffix}").unlink()
    (src / "synth00001.json").write_text((src / "synth00001.json").read_text().replace('"speaker00001"', '"sp1"'))
    third = write_shards(src, out, val_fraction=0.25, samples_per_shard=4, seed=1, progress=False)
    assert "input videos changed (8 -> 7 videos" in caplog.text
    assert check_manifest_matches_tars(out)["splits"]["train"]["videos"] == 5
    assert third["build"]["inputs_sha1"] != second["build"]["inputs_sha1"]
    assert all("synth00000" not in videos for videos in videos_in_tars(out).values())
    assert "sp1" in {m["speaker"] for path in out.glob("*.tar") for m in tar_metas(path)}  # the edited json

    caplog.clear()  # the same inputs and options again: nothing is rewritten
    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")}
    write_shards(src, out, val_fraction=0.25, samples_per_shard=4, seed=1, progress=False)
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")} == stamps
    assert "rebuilding" not in caplog.text


def test_unreadable_videos_are_skipped_listed_and_counted(synth_raw, tmp_path, capsys):
    src, out = tmp_path / "raw", tmp_path / "shards"
    ids = copy_videos(synth_raw, src)
    (src / f"{ids[1]}.mp4").write_bytes(audio_only_mp4())  # no video stream
    mp4 = (src / f"{ids[4]}.mp4").read_bytes()
    (src / f"{ids[4]}.mp4").write_bytes(mp4[: len(mp4) // 2])  # truncated
    (src / f"{ids[6]}.npz").write_bytes(np.random.default_rng(0).bytes(3000))  # garbage labels
    audio = read_wav(src / f"{ids[7]}.wav")
    write_wav(src / f"{ids[7]}.wav", audio[: len(audio) // 2])  # half the video's length: inspect would refuse it
    args = ["data", "shards", "--src", str(src), "--out", str(out), "--val-fraction", "0.25",
            "--samples-per-shard", "2"]
    assert main(args) == 0
    assert "4 videos failed" in capsys.readouterr().out
    failures = [json.loads(line) for line in (out / FAILURES).read_text().splitlines()]
    assert sorted(f["id"] for f in failures) == sorted([ids[1], ids[4], ids[6], ids[7]])
    reasons = {f["id"]: f["reason"] for f in failures}
    assert "cannot decode mp4" in reasons[ids[1]] and "cannot decode mp4" in reasons[ids[4]]
    assert f"{ids[6]}.npz: unreadable labels" in reasons[ids[6]]
    assert f"{ids[7]}.wav holds" in reasons[ids[7]] and "short by more than a frame" in reasons[ids[7]]
    assert all(f["path"] == str(src / f"{f['id']}.mp4") for f in failures)
    manifest = check_manifest_matches_tars(out)
    assert manifest["failed_videos"] == 4
    assert sum(info["videos"] for info in manifest["splits"].values()) == len(ids) - 4
    assert sum(info["failed"] for info in manifest["splits"].values()) == 4
    assert main(["data", "inspect", str(out)]) == 0  # every sample written reads
    assert "4 input videos could not be read" in capsys.readouterr().out

    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")}
    assert main(args) == 0  # resumed: the finished shards are kept, the failures still listed
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")} == stamps
    assert [json.loads(line) for line in (out / FAILURES).read_text().splitlines()] == failures


def test_corrupted_member_is_a_bad_sample_in_inspect(synth_shards, tmp_path, capsys):
    broken = tmp_path / "shards"
    shutil.copytree(synth_shards, broken)
    key = corrupt_member(broken / "train-000000.tar", schema.AUDIO)
    report = inspect_shards(broken, progress=False)
    assert len(report["bad"]) == 1
    assert all(part in report["bad"][0] for part in ("train-000000.tar", key, "audio.wav", "corrupted"))
    assert main(["data", "inspect", str(broken)]) == 1
    assert "audio.wav is corrupted" in capsys.readouterr().out


def test_shards_without_checksums_still_read(synth_shards, tmp_path):
    """Schema version 1 shards (no checksums in the json) read; a version 2 json without them is bad."""
    old = tmp_path / "old"
    shutil.copytree(synth_shards, old)

    def to_version_1(name, data):
        if not name.endswith(".json"):
            return data
        meta = json.loads(data)
        del meta[schema.CHECKSUMS]
        meta["schema_version"] = 1
        return json.dumps(meta).encode()

    for path in old.glob("*.tar"):
        rewrite_tar(path, to_version_1)
    manifest = json.loads((old / MANIFEST).read_text())
    manifest["schema_version"] = 1
    (old / MANIFEST).write_text(json.dumps(manifest))
    report = inspect_shards(old, progress=False)
    assert report["bad"] == [] and report["splits"]["train"]["samples"] == 6

    def stripped(name, data):
        if not name.endswith(".json"):
            return data
        return json.dumps({k: v for k, v in json.loads(data).items() if k != schema.CHECKSUMS}).encode()

    version_2 = tmp_path / "v2"
    shutil.copytree(synth_shards, version_2)
    rewrite_tar(version_2 / "train-000000.tar", stripped)
    bad = inspect_shards(version_2, progress=False)["bad"]
    assert len(bad) == 1 and "lacks 'checksums'" in bad[0]


def test_check_shards_match_names_both_sides(synth_shards):
    manifest = load_manifest(synth_shards)
    assert manifest["frame_size"] == 64
    feature = manifest["feature"]
    check_shards_match(manifest, 64, feature, feature["dim"])
    check_shards_match(manifest, None, None, feature["dim"])  # nothing recorded: only the model's input size
    with pytest.raises(ValueError, match="shards hold 64-px frames, the checkpoint was trained on 256-px"):
        check_shards_match(manifest, 256, feature, feature["dim"])
    with pytest.raises(ValueError, match="80-d \\(logmel\\), the model takes 1024-d"):
        check_shards_match(manifest, 64, None, 1024)
    with pytest.raises(ValueError, match="differs from the checkpoint's .* in hop, n_fft"):
        check_shards_match(manifest, 64, {**feature, "n_fft": 512, "hop": 320}, feature["dim"])
    old = {k: v for k, v in manifest.items() if k != "frame_size"}  # written before frame sizes were recorded
    check_shards_match(old, 256, feature, feature["dim"])


def test_a_manifest_path_names_its_directory_everywhere(synth_shards):
    """`--shards DIR/manifest.json` is accepted as well as DIR: the shard paths are those of DIR."""
    manifest_path = synth_shards / "manifest.json"
    assert shard_urls(manifest_path, "val") == shard_urls(synth_shards, "val")
    assert all(os.path.isfile(url) for url in shard_urls(manifest_path, "train"))
    report = inspect_shards(manifest_path, progress=False)
    assert not report["bad"] and report["splits"]["val"]["samples"] == load_manifest(synth_shards)["splits"]["val"]["samples"]
