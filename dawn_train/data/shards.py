"""Prepared videos -> WebDataset tar shards + `manifest.json`, and `inspect` to validate them.

A prepared-video directory holds, per video, `<id>.mp4` (face crop, 25 fps), `<id>.wav`
(16 kHz), `<id>.npz` (pose, blink, face_box, mouth_lmk) and `<id>.json` (metadata); `dawn-train
data synth` writes this layout and real-data prep does too.  Splits are by video.  Every shard
is written to a temporary file and renamed when complete, so an interrupted run leaves no half
shard that looks complete, and a rerun keeps the finished shards and writes the rest.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dawn_train.data import schema
from dawn_train.data.audio import LogMelSpec, log_mel, read_wav, wav_bytes
from dawn_train.data.sample import parse_sample
from dawn_train.data.schema import SchemaError
from dawn_train.data.video import Encoding, VideoBytes, encode_mp4

MANIFEST = "manifest.json"
SHARD_PATTERN = "{split}-{index:06d}.tar"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def list_videos(src: Path) -> list[str]:
    """Video ids of a prepared directory (a video counts once its .json exists)."""
    ids = sorted(path.stem for path in src.glob("*.json") if ".tmp" not in path.name)
    if not ids:
        raise FileNotFoundError(f"{src}: no prepared videos (<id>.json + .mp4 + .wav + .npz) found")
    return ids


def split_videos(ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic split by video: a seeded permutation, the first round(f * N) go to val."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = max(n_val, 1)
    val = {ids[i] for i in order[:n_val]}
    return {"train": [i for i in ids if i not in val], "val": [i for i in ids if i in val]}


def video_samples(src: Path, video_id: str, split: str, dataset: str, feature: LogMelSpec, chunk_frames: int,
                  encoding: Encoding):
    """Yield the shard samples (key -> bytes) of one prepared video, one per chunk."""
    name = str(src / video_id)
    meta = json.loads((src / f"{video_id}.json").read_text())
    mp4 = (src / f"{video_id}.mp4").read_bytes()
    video = VideoBytes(mp4, f"{name}.mp4")
    n_frames = len(video)
    if n_frames != int(meta["n_frames"]):
        raise SchemaError(f"{name}.mp4 has {n_frames} frames, {name}.json says {meta['n_frames']}")
    audio = read_wav(src / f"{video_id}.wav")
    labels = dict(np.load(src / f"{video_id}.npz"))
    arrays = {
        schema.AUDIO_FEAT: log_mel(audio, n_frames, feature).astype(np.float16),
        schema.POSE: labels["pose"].astype(np.float32), schema.BLINK: labels["blink"].astype(np.float32),
        schema.FACE_BOX: labels["face_box"].astype(np.float32), schema.MOUTH_LMK: labels["mouth_lmk"].astype(np.float32),
    }
    for key, array in arrays.items():
        schema.check_array(name, key, array, n_frames)
    chunk = chunk_frames if chunk_frames > 0 else n_frames
    for index, start in enumerate(range(0, n_frames, chunk)):
        stop = min(n_frames, start + chunk)
        frames = mp4 if (start, stop) == (0, n_frames) else encode_mp4(video.frames(range(start, stop)), encoding=encoding)
        clip_audio = audio[start * schema.SAMPLES_PER_FRAME: stop * schema.SAMPLES_PER_FRAME]
        clip_meta = {**meta, "n_frames": stop - start, "chunk": index, "chunk_start": start, "split": split,
                     "dataset": dataset, "schema_version": schema.SCHEMA_VERSION, "feature": feature.describe()}
        clip_meta.pop("blinks", None)
        if "blinks" in meta:  # keep ground-truth blink onsets that fall inside the chunk, re-based
            clip_meta["blinks"] = [[s - start, n] for s, n in meta["blinks"] if start <= s and s + n <= stop]
        sample = {"__key__": f"{dataset}/{video_id}/{index:04d}", schema.FRAMES: frames,
                  schema.AUDIO: wav_bytes(clip_audio), schema.META: json.dumps(clip_meta).encode()}
        sample.update({key: npy_bytes(array[start:stop]) for key, array in arrays.items()})
        yield sample


def write_tar(path: Path, samples: list[dict]) -> None:
    """Write samples to `path` atomically (temporary file, then rename)."""
    import webdataset as wds

    tmp = path.with_name(path.name + ".tmp")
    with wds.TarWriter(str(tmp)) as sink:
        for sample in samples:
            sink.write(sample)
    os.replace(tmp, path)


def tar_stats(path: Path) -> dict:
    """Sample and frame counts of a finished shard, read from its json members."""
    samples = frames = 0
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith("." + schema.META):
                samples += 1
                frames += int(json.loads(tar.extractfile(member).read())["n_frames"])
    return {"name": path.name, "samples": samples, "frames": frames, "bytes": path.stat().st_size}


def write_shards(src: str | Path, out: str | Path, val_fraction: float = 0.1, samples_per_shard: int = 4,
                 chunk_frames: int = 500, dataset: str | None = None, seed: int = 0, feature: LogMelSpec = LogMelSpec(),
                 encoding: Encoding = Encoding(), progress: bool = True) -> dict:
    """Write train/val shards of the prepared videos in `src` to `out`; returns the manifest."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    dataset = dataset or out.parent.name or "dataset"
    out.mkdir(parents=True, exist_ok=True)
    splits = split_videos(list_videos(src), val_fraction, seed)
    manifest = {"schema_version": schema.SCHEMA_VERSION, "dataset": dataset, "fps": schema.FPS,
                "sample_rate": schema.SAMPLE_RATE, "feature": feature.describe(), "chunk_frames": chunk_frames,
                "encoding": asdict(encoding), "splits": {}}
    bar = tqdm(total=sum(map(len, splits.values())), desc="shards (videos)", disable=not progress)
    for split, ids in splits.items():
        shards = []
        for index, first in enumerate(range(0, len(ids), samples_per_shard)):
            group = ids[first:first + samples_per_shard]
            path = out / SHARD_PATTERN.format(split=split, index=index)
            if not path.exists():  # finished shards of an interrupted run are kept
                samples = [s for v in group for s in video_samples(src, v, split, dataset, feature, chunk_frames, encoding)]
                write_tar(path, samples)
            shards.append({**tar_stats(path), "videos": group})
            bar.update(len(group))
        manifest["splits"][split] = {"videos": len(ids), "samples": sum(s["samples"] for s in shards),
                                     "frames": sum(s["frames"] for s in shards), "shards": shards}
    bar.close()
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


def load_manifest(shards: str | Path) -> dict:
    """The manifest of a shard directory (or of the directory of a manifest path)."""
    path = Path(shards)
    path = path if path.name == MANIFEST else path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard manifest (write shards with `dawn-train data shards`)")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != schema.SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {manifest.get('schema_version')}, this dawn_train reads {schema.SCHEMA_VERSION}")
    return manifest


def shard_urls(shards: str | Path, split: str) -> list[str]:
    manifest, root = load_manifest(shards), Path(shards)
    if split not in manifest["splits"] or not manifest["splits"][split]["shards"]:
        raise ValueError(f"{root / MANIFEST}: no '{split}' shards")
    return [str(root / shard["name"]) for shard in manifest["splits"][split]["shards"]]


def inspect_shards(shards: str | Path, progress: bool = True) -> dict:
    """Validate every sample of every shard (videos fully decoded); returns counts and bad samples."""
    from tqdm import tqdm

    root, manifest = Path(shards), load_manifest(shards)
    report = {"splits": {}, "bad": [], "feature": manifest["feature"], "fps": manifest["fps"]}
    for split, info in manifest["splits"].items():
        counts = defaultdict(int)
        for shard in tqdm(info["shards"], desc=f"inspect {split}", disable=not progress):
            for raw in iter_tar(root / shard["name"], report["bad"]):
                try:
                    parsed = parse_sample(raw, feature_dim=manifest["feature"]["dim"])
                    parsed[schema.FRAMES].frames(range(len(parsed[schema.FRAMES])))
                except (SchemaError, ValueError) as exc:
                    report["bad"].append(str(exc))
                    continue
                counts["samples"] += 1
                counts["frames"] += parsed["meta"]["n_frames"]
        counts["seconds"] = counts["frames"] / manifest["fps"]
        counts["manifest_samples"], counts["manifest_frames"] = info["samples"], info["frames"]
        report["splits"][split] = dict(counts)
    return report


def iter_tar(path: Path, bad: list):
    """Group the members of one tar into raw samples; a broken tar is reported in `bad`, not raised."""
    current: dict = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                if current and current["__key__"] != key:
                    yield current
                    current = {}
                current.setdefault("__key__", key)
                current["__url__"] = str(path)
                current[suffix] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        bad.append(f"{path}: unreadable tar after key {current.get('__key__', '<start>')} ({exc})")
        return
    if current:
        yield current
