import json
import os
import shutil
import tarfile

import numpy as np

from dawn_train.cli import main
from dawn_train.data.shards import MANIFEST, inspect_shards, load_manifest, split_videos, write_shards


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
    suffixes = sorted(n.split(".", 1)[1] for n in names)
    assert suffixes == sorted(["frames.mp4", "audio.wav", "audio_feat.npy", "pose.npy", "blink.npy", "face_box.npy",
                               "mouth_lmk.npy", "json"])


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
    assert main(["data", "shards", "--src", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "no prepared videos" in capsys.readouterr().err


def test_audio_feature_matches_audio(synth_raw, synth_shards):
    from dawn_train.data.audio import log_mel, read_wav

    with tarfile.open(synth_shards / "train-000000.tar") as tar:
        files = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}
    meta = json.loads(files["json"])
    feature = np.load(__import__("io").BytesIO(files["audio_feat.npy"]))
    audio = read_wav(synth_raw / f"{meta['video_id']}.wav")
    assert np.allclose(feature, log_mel(audio, meta["n_frames"]).astype(np.float16))
