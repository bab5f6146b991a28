"""Prepared videos -> WebDataset tar shards + `manifest.json`, and `inspect` to validate them.

A prepared-video directory holds, per video, `<id>.mp4` (face crop, 25 fps), `<id>.wav`
(16 kHz), `<id>.npz` (pose, blink, face_box, mouth_lmk; eye_lmk when present) and `<id>.json` (metadata); `dawn-train
data synth` writes this layout and real-data prep does too.  Splits are by video (or by speaker), with the
official test and excluded lists when split files are given (`data/splits.py`).  The audio feature is the
built-in log-mel or HuBERT (`data/audio.audio_feature`); its spec goes into the manifest.

Resuming and rebuilding: every shard is written to a temporary file and renamed when complete,
so an interrupted run leaves no half shard that looks complete.  Before the first shard, `build.json`
records what the directory is built from (`data/build_record.py`: inputs, options, feature, split files);
a rerun of the same build keeps the finished shards and writes the rest, a rerun of another one removes
this command's own old files (`train-*.tar`, `val-*.tar`, `test-*.tar`, their `.tmp`, the manifest and the
failures file) and rebuilds from scratch, saying what changed, so old and new tars never mix.

A video that cannot be read (no video stream, truncated mp4, broken npz, labels of the wrong
length ...) is skipped: `failures.jsonl` lists it (id, path, reason), the manifest counts it,
and the other videos are written.  Sample keys and checksums follow `schema.py`.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zipfile
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from dawn_train.data import schema
from dawn_train.data.audio import LogMelSpec, read_wav, wav_bytes
from dawn_train.data.build_record import build_changes, build_record, read_json_or_none
from dawn_train.data.sample import parse_sample
from dawn_train.data.schema import SchemaError
from dawn_train.data.splits import SplitLists, assign_splits
from dawn_train.data.video import Encoding, VideoBytes, encode_mp4
from dawn_train.files import read_json
from dawn_train.log import get_logger

log = get_logger(__name__)
MANIFEST = "manifest.json"
BUILD = "build.json"
FAILURES = "failures.jsonl"
SHARD_PATTERN = "{split}-{index:06d}.tar"
SHARD_FILE = re.compile(r"(train|val|test)-\d{6}\.tar(\.tmp)?")
# What reading one prepared video can raise (VideoError, AudioError, SchemaError are ValueErrors).
VIDEO_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, EOFError, zipfile.BadZipFile)
LABELS = ("pose", "blink", "face_box", "mouth_lmk")  # arrays of `<id>.npz`
# the schema's optional members ("eye_lmk.npy" <- `<id>.npz`'s "eye_lmk"), written to the shards when the npz has them
OPTIONAL_LABELS = {key.removesuffix(".npy"): key for key in schema.OPTIONAL_KEYS}
DECODE_CHECK_FRAMES = 250  # frames decoded at a time when checking that a whole video decodes


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


def frame_size(video: VideoBytes, name: str, decode_all: bool) -> int:
    """The side of the square frames of `video`; with `decode_all`, every frame is decoded once
    (in blocks) so that a video that opens but breaks later fails here, not in training."""
    height, width = video.frames([0]).shape[1:3]
    if height != width:
        raise SchemaError(f"{name}.mp4: frames are {width}x{height}, shards hold square face crops")
    if decode_all:
        for start in range(0, len(video), DECODE_CHECK_FRAMES):
            video.frames(range(start, min(len(video), start + DECODE_CHECK_FRAMES)))
    return int(height)


def video_samples(src: Path, video_id: str, split: str, dataset: str, feature, chunk_frames: int,
                  encoding: Encoding):
    """Yield the shard samples (key -> bytes) of one prepared video, one per chunk.  `feature`: a
    `data.audio.audio_feature` (computed over the whole video's audio, then cut into chunks)."""
    name = str(src / video_id)
    meta = json.loads((src / f"{video_id}.json").read_text())
    mp4 = (src / f"{video_id}.mp4").read_bytes()
    video = VideoBytes(mp4, f"{name}.mp4")
    n_frames = len(video)
    if n_frames != int(meta["n_frames"]):
        raise SchemaError(f"{name}.mp4 has {n_frames} frames, {name}.json says {meta['n_frames']}")
    chunk = chunk_frames if chunk_frames > 0 else n_frames
    size = frame_size(video, name, decode_all=chunk >= n_frames)  # chunks are decoded below anyway
    audio = read_wav(src / f"{video_id}.wav")
    # audio shorter than the frames by more than a frame: readers refuse its last chunk (longer audio is cut to each
    # chunk's frames below)
    if len(audio) < (n_frames - 1) * schema.SAMPLES_PER_FRAME:
        raise SchemaError(f"{name}.wav holds {len(audio) / schema.SAMPLE_RATE:.2f} s of audio ({len(audio)} samples), "
                          f"{name}.mp4 {n_frames / schema.FPS:.2f} s ({n_frames} frames): the audio is short by more "
                          f"than a frame")
    try:
        labels = dict(np.load(src / f"{video_id}.npz", allow_pickle=False))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SchemaError(f"{name}.npz: unreadable labels ({exc})") from exc
    missing = [label for label in LABELS if label not in labels]
    if missing:
        raise SchemaError(f"{name}.npz lacks {', '.join(missing)}")
    arrays = {
        schema.AUDIO_FEAT: feature.compute(audio, n_frames).astype(np.float16),
        schema.POSE: labels["pose"].astype(np.float32), schema.BLINK: labels["blink"].astype(np.float32),
        schema.FACE_BOX: labels["face_box"].astype(np.float32),
        schema.MOUTH_LMK: labels["mouth_lmk"].astype(np.float32),
    }
    arrays.update({key: labels[label].astype(np.float32) for label, key in OPTIONAL_LABELS.items() if label in labels})
    for key, array in arrays.items():
        schema.check_array(name, key, array, n_frames)
    for index, start in enumerate(range(0, n_frames, chunk)):
        stop = min(n_frames, start + chunk)
        whole = (start, stop) == (0, n_frames)
        frames = mp4 if whole else encode_mp4(video.frames(range(start, stop)), encoding=encoding)
        clip_audio = audio[start * schema.SAMPLES_PER_FRAME: stop * schema.SAMPLES_PER_FRAME]
        members = {schema.FRAMES: frames, schema.AUDIO: wav_bytes(clip_audio)}
        members.update({key: npy_bytes(array[start:stop]) for key, array in arrays.items()})
        clip_meta = {**meta, "video_id": meta.get("video_id", video_id), "source_file": f"{video_id}.mp4",
                     "size": size, "n_frames": stop - start, "chunk": index, "chunk_start": start, "split": split,
                     "dataset": dataset, "schema_version": schema.SCHEMA_VERSION, "feature": feature.describe(),
                     schema.CHECKSUMS: {key: schema.checksum(data) for key, data in members.items()}}
        clip_meta.pop("blinks", None)
        if "blinks" in meta:  # keep ground-truth blink onsets that fall inside the chunk, re-based
            clip_meta["blinks"] = [[s - start, n] for s, n in meta["blinks"] if start <= s and s + n <= stop]
        yield {"__key__": schema.sample_key(dataset, video_id, index), **members,
               schema.META: json.dumps(clip_meta).encode()}


def write_tar(path: Path, samples: list[dict]) -> None:
    """Write samples to `path` atomically (temporary file, then rename)."""
    import webdataset as wds

    tmp = path.with_name(path.name + ".tmp")
    with wds.TarWriter(str(tmp)) as sink:
        for sample in samples:
            sink.write(sample)
    os.replace(tmp, path)


def tar_stats(path: Path) -> dict:
    """Sample and frame counts, frame sizes and the video parts of the keys of a finished shard,
    read from its json members."""
    samples = frames = 0
    sizes, video_keys = set(), set()
    with tarfile.open(path) as tar:
        for member in tar:
            key, suffix = schema.split_member(member.name)
            if suffix == schema.META:
                meta = json.loads(tar.extractfile(member).read())
                samples += 1
                frames += int(meta["n_frames"])
                if meta.get("size") is not None:
                    sizes.add(meta["size"])
                video_keys.add(key.split("/")[1])
    return {"name": path.name, "samples": samples, "frames": frames, "bytes": path.stat().st_size,
            "sizes": sorted(sizes), "video_keys": video_keys}


def start_build(out: Path, record: dict) -> dict:
    """Make `out` ready for the build `record`: keep what an earlier run of the same build wrote,
    else remove its old shards.  Returns the earlier run's failures ({id: failure}) when kept."""
    old_files = [path for path in out.iterdir() if SHARD_FILE.fullmatch(path.name)]
    changes = build_changes(read_json_or_none(out / BUILD), record)
    if not changes:
        return {f["id"]: f for f in read_failures(out) if isinstance(f, dict) and "id" in f}
    if old_files or (out / MANIFEST).exists():
        log.warning("%s: the shards there were built from other inputs or options (%s): removing %d old shard "
                    "files and rebuilding from scratch", out, "; ".join(changes), len(old_files))
    for path in [*old_files, out / MANIFEST, out / FAILURES, out / BUILD]:
        path.unlink(missing_ok=True)
    write_atomic(out / BUILD, json.dumps(record, indent=1))
    return {}


def read_failures(out: Path) -> list[dict]:
    """The videos `data shards` could not read into `out` (the lines of `failures.jsonl`)."""
    path = out / FAILURES
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def finished_shard(path: Path, group: list[str], src: Path, earlier_failures: dict):
    """(stats, videos written, failures) of a shard an earlier run of the same build finished, or
    None when there is none (an unreadable one is removed, to be written again)."""
    if not path.exists():
        return None
    try:
        stats = tar_stats(path)
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable (%s); writing it again", path, exc)
        path.unlink()
        return None
    written = [v for v in group if schema.key_part(v) in stats["video_keys"]]
    lost = "not in the shard an earlier run finished (no reason recorded)"
    failures = [earlier_failures.get(v) or {"id": v, "path": str(src / f"{v}.mp4"), "reason": lost}
                for v in group if v not in written]
    return stats, written, failures


def failure(src: Path, video_id: str, exc: Exception) -> dict:
    return {"id": video_id, "path": str(src / f"{video_id}.mp4"), "reason": f"{type(exc).__name__}: {exc}"}


def write_shards(src: str | Path, out: str | Path, val_fraction: float = 0.1, samples_per_shard: int = 4,
                 chunk_frames: int = 500, dataset: str | None = None, seed: int = 0, feature=LogMelSpec(),
                 encoding: Encoding = Encoding(), split_files: Sequence[str | Path] = (), progress: bool = True) -> dict:
    """Write train/val shards (and test shards with `split_files`) of the prepared videos in `src` to `out`;
    returns the manifest.  `feature`: a `data.audio.audio_feature` (log-mel or HuBERT); `split_files`: official
    lists (`data/splits.py`): listed test videos/speakers go to test shards, excluded ones nowhere.

    Unreadable videos are skipped and listed in `out/failures.jsonl`; raises ValueError only when
    no video at all could be read."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: a file, not a shard folder (--out names the folder to write the shards in)")
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    dataset = dataset or out.parent.name or "dataset"
    ids = list_videos(src)
    lists = SplitLists.read(split_files) if split_files else None
    splits, split_record = assign_splits(ids, val_fraction, seed, lists)
    options = {"schema_version": schema.SCHEMA_VERSION, "dataset": dataset, "val_fraction": val_fraction,
               "seed": seed, "samples_per_shard": samples_per_shard, "chunk_frames": chunk_frames,
               "feature": feature.describe(), "encoding": asdict(encoding),
               "split_files": lists.describe() if lists else None}  # None keeps builds from before split files
    record = build_record(src, ids, options)
    out.mkdir(parents=True, exist_ok=True)
    earlier_failures = start_build(out, record)
    manifest = {"schema_version": schema.SCHEMA_VERSION, "dataset": dataset, "fps": schema.FPS,
                "sample_rate": schema.SAMPLE_RATE, "feature": feature.describe(), "chunk_frames": chunk_frames,
                "encoding": asdict(encoding), "frame_size": None, "failed_videos": 0, "build": record,
                "split": split_record, "splits": {}}
    failures, sizes = [], set()
    bar = tqdm(total=sum(map(len, splits.values())), desc="shards (videos)", disable=not progress)
    for split, split_ids in splits.items():
        shards, failed = [], 0
        for index, first in enumerate(range(0, len(split_ids), samples_per_shard)):
            group = split_ids[first:first + samples_per_shard]
            path = out / SHARD_PATTERN.format(split=split, index=index)
            kept = finished_shard(path, group, src, earlier_failures)
            if kept is not None:
                stats, written, new_failures = kept
            else:
                samples, written, new_failures = [], [], []
                for video_id in group:
                    try:
                        samples += list(video_samples(src, video_id, split, dataset, feature, chunk_frames, encoding))
                        written.append(video_id)
                    except VIDEO_ERRORS as exc:
                        new_failures.append(failure(src, video_id, exc))
                        log.warning("skipped video %s: %s", video_id, new_failures[-1]["reason"])
                write_tar(path, samples)  # even when empty: a rerun then knows this shard is done
                stats = tar_stats(path)
            failures += new_failures
            failed += len(new_failures)
            sizes.update(stats.pop("sizes"))
            del stats["video_keys"]
            if stats["samples"]:  # an empty shard would stall a reader that only gets empty shards
                shards.append({**stats, "videos": written})
            bar.update(len(group))
        manifest["splits"][split] = {"videos": len(split_ids) - failed, "failed": failed,
                                     "samples": sum(s["samples"] for s in shards),
                                     "frames": sum(s["frames"] for s in shards), "shards": shards}
    bar.close()
    manifest["failed_videos"] = len(failures)
    write_atomic(out / FAILURES, "".join(json.dumps(f) + "\n" for f in failures))
    if not any(info["samples"] for info in manifest["splits"].values()):
        raise ValueError(f"{src}: none of the {len(ids)} videos could be read (reasons in {out / FAILURES})")
    sizes = sorted(sizes)
    manifest["frame_size"] = sizes[0] if len(sizes) == 1 else sizes
    if len(sizes) > 1:
        log.warning("%s: videos of several frame sizes (%s px) in one shard directory", out, sizes)
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def check_shards_match(manifest: dict, image_size: int | None, audio_feature: dict | None, audio_dim: int) -> None:
    """Raise ValueError when shards hold other frames or audio features than a checkpoint was trained on.

    `image_size` and `audio_feature` are what the checkpoint records (None: not recorded, not checked);
    `audio_dim` is the size of the model's audio input.  Manifests written before frame sizes were
    recorded (no `frame_size`) are not checked for size."""
    problems = []
    sizes = manifest.get("frame_size")
    if image_size is not None and sizes is not None and sizes != image_size:
        problems.append(f"the shards hold {sizes}-px frames, the checkpoint was trained on {image_size}-px frames")
    feature = manifest.get("feature") or {}
    if feature.get("dim") != audio_dim:
        problems.append(f"the shards' audio feature is {feature.get('dim')}-d ({feature.get('type')}), "
                        f"the model takes {audio_dim}-d")
    if audio_feature is not None:
        differ = sorted(k for k in set(feature) & set(audio_feature) if feature[k] != audio_feature[k])
        if differ:
            problems.append(f"the shards' audio feature {feature} differs from the checkpoint's {audio_feature} "
                            f"in {', '.join(differ)}")
    if problems:
        raise ValueError(f"shards of '{manifest.get('dataset')}' do not match the checkpoint: " + "; ".join(problems))


def shard_root(shards: str | Path) -> Path:
    """The shard directory named by `shards`: the directory itself or the path of its manifest."""
    path = Path(shards)
    return path.parent if path.name == MANIFEST else path


def load_manifest(shards: str | Path) -> dict:
    """The manifest of a shard directory (or of the directory of a manifest path)."""
    path = shard_root(shards) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard manifest (write shards with `dawn-train data shards`)")
    manifest = read_json(path, "shard manifest")
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a shard manifest (a JSON object expected)")
    if manifest.get("schema_version") not in schema.READABLE_VERSIONS:
        raise ValueError(f"{path}: schema_version {manifest.get('schema_version')}, this dawn_train reads "
                         f"{', '.join(map(str, schema.READABLE_VERSIONS))}")
    return manifest


def shard_urls(shards: str | Path, split: str) -> list[str]:
    manifest, root = load_manifest(shards), shard_root(shards)
    if split not in manifest["splits"] or not manifest["splits"][split]["shards"]:
        raise ValueError(f"{root / MANIFEST}: no '{split}' shards")
    return [str(root / shard["name"]) for shard in manifest["splits"][split]["shards"]]


def inspect_shards(shards: str | Path, progress: bool = True) -> dict:
    """Validate every sample of every shard (checksums, schema, videos fully decoded); returns counts
    and bad samples (each named by shard, key and member)."""
    from tqdm import tqdm

    root, manifest = shard_root(shards), load_manifest(shards)
    report = {"splits": {}, "bad": [], "feature": manifest["feature"], "fps": manifest["fps"],
              "failed_videos": manifest.get("failed_videos", 0)}
    for split, info in manifest["splits"].items():
        counts = defaultdict(int)
        for shard in tqdm(info["shards"], desc=f"inspect {split}", disable=not progress):
            read = 0
            for raw in iter_tar(root / shard["name"], report["bad"]):
                read += 1
                try:
                    parsed = parse_sample(raw, feature_dim=manifest["feature"]["dim"])
                    parsed[schema.FRAMES].frames(range(len(parsed[schema.FRAMES])))
                except (SchemaError, ValueError) as exc:
                    report["bad"].append(str(exc))
                    continue
                counts["samples"] += 1
                counts["frames"] += parsed["meta"]["n_frames"]
            if read < shard.get("samples", read):  # a tar cut at a member boundary reads as a shorter, sound tar
                report["bad"].append(f"{root / shard['name']}: {read} samples, the manifest lists {shard['samples']} "
                                     f"(truncated?)")
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
                key, suffix = schema.split_member(member.name)
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
