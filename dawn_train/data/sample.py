"""Parse one raw shard sample (key -> bytes) into checked arrays.

Used by the streaming loader (only the keys a stage needs) and by `dawn-train data inspect`
(every key, video fully decoded).  Every problem raises `SchemaError` naming the shard,
the sample key and what is wrong.  The bytes of every member read are checked against the
crc32 the json records (schema version 2; version 1 samples have none), so a member corrupted
inside an intact tar is a bad sample, not training data."""
from __future__ import annotations

import io
import json

import numpy as np

from dawn_train.data import schema
from dawn_train.data.audio import AudioError, read_wav
from dawn_train.data.schema import SchemaError
from dawn_train.data.video import VideoBytes, VideoError


def sample_name(raw: dict) -> str:
    return f"{raw.get('__url__', '<shard>')}:{raw.get('__key__', '<key>')}"


def load_npy(name: str, key: str, data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/EOFError/OSError for broken files
        raise SchemaError(f"{name}: {key} is not a readable .npy ({exc})") from exc


def verify_checksums(name: str, meta: dict, raw: dict, keys) -> None:
    """Check the bytes of members `keys` of raw sample `name` against the crc32 its json records."""
    version = meta.get("schema_version", 1)
    recorded = meta.get(schema.CHECKSUMS)
    if recorded is None:
        if version == 1:
            return  # written before checksums existed
        raise SchemaError(f"{name}: json lacks '{schema.CHECKSUMS}' (schema version {version})")
    for key in keys:
        if key == schema.META:
            continue
        if key not in recorded:
            raise SchemaError(f"{name}: json records no checksum of {key}")
        actual = schema.checksum(raw[key])
        if actual != recorded[key]:
            raise SchemaError(f"{name}: {key} is corrupted (crc32 {actual}, the json records {recorded[key]})")


def parse_sample(raw: dict, keys=schema.ALL_KEYS, feature_dim: int | None = None) -> dict:
    """Parse `keys` of raw sample `raw` -> {"meta": dict, key: array or VideoBytes or audio}.

    Arrays are checked against the schema and against `n_frames` of the metadata, so all
    per-frame arrays have exactly one row per video frame.  Optional members (`schema.OPTIONAL_KEYS`)
    a sample lacks are left out of the result.  The mp4 is opened (its frame count
    checked) but only decoded later, frame by frame, by whoever needs it."""
    name = sample_name(raw)
    missing = [key for key in keys if key not in raw and key not in schema.OPTIONAL_KEYS]
    keys = [key for key in keys if key in raw]
    if missing:
        raise SchemaError(f"{name}: missing {', '.join(missing)}")
    try:
        meta = json.loads(raw[schema.META])
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{name}: json is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise SchemaError(f"{name}: json is a {type(meta).__name__}, not an object")
    n_frames = int(schema.check_meta(name, meta)["n_frames"])
    verify_checksums(name, meta, raw, keys)
    parsed: dict = {"meta": meta, "name": name}
    for key in keys:
        if key in schema.ARRAYS:
            parsed[key] = schema.check_array(name, key, load_npy(name, key, raw[key]), n_frames)
    dim = parsed[schema.AUDIO_FEAT].shape[1] if schema.AUDIO_FEAT in parsed else None
    if feature_dim is not None and dim is not None and dim != feature_dim:
        raise SchemaError(f"{name}: audio_feat has dim {dim}, the manifest says {feature_dim}")
    if schema.FRAMES in keys:
        try:
            video = VideoBytes(raw[schema.FRAMES], f"{name}/{schema.FRAMES}")
        except VideoError as exc:
            raise SchemaError(str(exc)) from exc
        if len(video) != n_frames:
            raise SchemaError(f"{name}: frames.mp4 has {len(video)} frames, json n_frames says {n_frames}")
        parsed[schema.FRAMES] = video
    if schema.AUDIO in keys:
        try:
            audio = read_wav(raw[schema.AUDIO], f"{name}/{schema.AUDIO}")
        except AudioError as exc:
            raise SchemaError(str(exc)) from exc
        expected = n_frames * schema.SAMPLES_PER_FRAME
        if abs(len(audio) - expected) > schema.SAMPLES_PER_FRAME:
            raise SchemaError(f"{name}: audio.wav has {len(audio)} samples, expected {expected} (+-1 frame)")
        parsed[schema.AUDIO] = audio
    return parsed


def decode_frames(parsed: dict, indices) -> np.ndarray:
    """Decode frames `indices` of a parsed sample -> uint8 (N, H, W, 3); errors name the sample."""
    try:
        return parsed[schema.FRAMES].frames(indices)
    except VideoError as exc:
        raise SchemaError(str(exc)) from exc
