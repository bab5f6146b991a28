"""The shard sample contract: the one place that names sample keys, dtypes, shapes and units.

One WebDataset sample is one talking-head chunk of one video (see README, "Shards"):

| key              | content                                                                   |
|------------------|---------------------------------------------------------------------------|
| `frames.mp4`     | face crop, square, 25 fps, H.264 (decoded from bytes with decord)         |
| `audio.wav`      | 16 kHz mono PCM16                                                         |
| `audio_feat.npy` | (T, D) float16, one row per video frame (log-mel or HuBERT)               |
| `pose.npy`       | (T, 6) float32: yaw, pitch, roll (degrees), scale, tx, ty (official order) |
| `blink.npy`      | (T, 2) float32: eye openness (left, right) = lid distance / eye width     |
| `face_box.npy`   | (T, 4) float32: face box in the crop (x0, y0, x1, y1), pixels             |
| `mouth_lmk.npy`  | (T, K, 2) float32: mouth landmarks in the crop (x, y), pixels             |
| `eye_lmk.npy`    | optional, (T, 12, 2) float32: eye landmarks (68-point 36-47), pixels      |
| `json`           | metadata: fps, n_frames, size, video id, speaker, split, prep version ... |

The sample key is `<dataset>/<video_id>/<chunk>` with every part made safe by `key_part` (ASCII
letters, digits, `_` and `-` only): webdataset splits a tar member name at the first dot of its
last path component, and spaces, unicode or slashes make keys that other tools mangle.  The
original names stay in the json (`dataset`, `video_id`, `source_file`).  Since schema version 2
the json also holds `checksums` (member -> crc32 of its bytes), verified whenever a member is
read; version 1 shards (no checksums) still read.

Pose units follow the official release where it matters for its normalisation
(angles in degrees); `scale` is the face height over the crop size and `tx, ty` the face
centre in crop pixels (the official 3DDFA values live in a 120-px crop space instead:
real-data prep converts them, see `datasets/hdtf/README.md`).
"""
from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 2  # 2: sanitised sample keys, per-member checksums in the json
READABLE_VERSIONS = (1, 2)
FPS = 25
SAMPLE_RATE = 16000
FEATURE_KINDS = ("logmel", "hubert")  # the audio features a shard can hold (`data.audio.audio_feature`)
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples per video frame

FRAMES = "frames.mp4"
AUDIO = "audio.wav"
AUDIO_FEAT = "audio_feat.npy"
POSE = "pose.npy"
BLINK = "blink.npy"
FACE_BOX = "face_box.npy"
MOUTH_LMK = "mouth_lmk.npy"
EYE_LMK = "eye_lmk.npy"
META = "json"
CHECKSUMS = "checksums"  # json field: member name -> crc32 of its bytes (8 hex digits)

POSE_DIM = 6
BLINK_DIM = 2
POSE_NAMES = ("yaw", "pitch", "roll", "scale", "tx", "ty")
BLINK_NAMES = ("left", "right")


@dataclass(frozen=True)
class ArraySpec:
    """A per-frame array: `(T, *trailing)`; `None` in `trailing` means "any size"."""

    key: str
    dtype: np.dtype
    trailing: tuple[int | None, ...]


ARRAYS = {
    AUDIO_FEAT: ArraySpec(AUDIO_FEAT, np.dtype(np.float16), (None,)),
    POSE: ArraySpec(POSE, np.dtype(np.float32), (POSE_DIM,)),
    BLINK: ArraySpec(BLINK, np.dtype(np.float32), (BLINK_DIM,)),
    FACE_BOX: ArraySpec(FACE_BOX, np.dtype(np.float32), (4,)),
    MOUTH_LMK: ArraySpec(MOUTH_LMK, np.dtype(np.float32), (None, 2)),
    EYE_LMK: ArraySpec(EYE_LMK, np.dtype(np.float32), (12, 2)),
}
ALL_KEYS = (FRAMES, AUDIO, *ARRAYS, META)
# Members a sample may lack (shards written before they existed, or by a prep that cannot make them): read
# when present; whoever uses one checks for it.
OPTIONAL_KEYS = (EYE_LMK,)
BLINK_RELATIVE = 0.6  # a blink frame: eye openness below this x the video's median (Blink/s, LFG blink pairs)
EYE_POINTS = 6  # landmarks per eye in `eye_lmk`: image-left eye first (68-point 36-41, then 42-47)

# What each training stage reads from a sample (video decoding is the expensive part:
# PBNet never touches `frames.mp4`).  The LFG reads the mouth and eye points for its optional region losses
# and the eye openness for its optional blink pairs.
STAGE_KEYS = {
    "lfg": (FRAMES, BLINK, MOUTH_LMK, EYE_LMK, META),
    "pbnet": (AUDIO_FEAT, POSE, BLINK, META),
    "a2v": (FRAMES, AUDIO, AUDIO_FEAT, POSE, BLINK, FACE_BOX, MOUTH_LMK, META),
}


KEY_PART_MAX = 64  # characters kept of a name before its hash
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def key_part(name: str) -> str:
    """`name` as one safe part of a sample key.  Safe names are kept; any other name becomes an
    ASCII transliteration with every other character run replaced by `_`, plus the crc32 of the
    original name, so that distinct names stay distinct ("HDTF.v1" -> "HDTF_v1-17c57750")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = _UNSAFE.sub("_", ascii_name).strip("_-")[:KEY_PART_MAX]
    if safe == name:
        return name
    return f"{safe or 'x'}-{zlib.crc32(name.encode('utf-8', 'surrogateescape')):08x}"


def sample_key(dataset: str, video_id: str, chunk: int) -> str:
    """The `__key__` of chunk `chunk` of video `video_id` of `dataset`: `<dataset>/<video_id>/<chunk>`."""
    return f"{key_part(dataset)}/{key_part(video_id)}/{chunk:04d}"


def split_member(name: str) -> tuple[str, str]:
    """Tar member name -> (sample key, member), split as webdataset splits it: at the first dot of
    the last path component ("ds/v0/0001.audio_feat.npy" -> ("ds/v0/0001", "audio_feat.npy"))."""
    folder, _, base = name.rpartition("/")
    stem, _, member = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), member


def checksum(data: bytes) -> str:
    """crc32 of a member's bytes as 8 hex digits (about 1 GB/s: cheap enough to check on every read)."""
    return f"{zlib.crc32(data):08x}"


class SchemaError(ValueError):
    """A sample does not follow the contract; the message names the sample and the key."""


def check_array(name: str, key: str, array: np.ndarray, n_frames: int) -> np.ndarray:
    """Check dtype/shape of one per-frame array of sample `name`; return it unchanged."""
    spec = ARRAYS[key]
    expected = (n_frames, *spec.trailing)
    shape_ok = array.ndim == len(expected) and all(e is None or e == a for e, a in zip(expected, array.shape))
    if not shape_ok:
        shown = tuple("*" if e is None else e for e in expected)
        raise SchemaError(f"{name}: {key} has shape {tuple(array.shape)}, expected {shown}")
    if array.dtype != spec.dtype:
        raise SchemaError(f"{name}: {key} has dtype {array.dtype}, expected {spec.dtype}")
    if not np.isfinite(array.astype(np.float32)).all():
        raise SchemaError(f"{name}: {key} contains NaN or inf")
    return array


def check_meta(name: str, meta: dict) -> dict:
    """Check the required metadata fields of sample `name`."""
    for field in ("n_frames", "fps", "size", "video_id"):
        if field not in meta:
            raise SchemaError(f"{name}: json lacks field '{field}'")
    if meta["fps"] != FPS:
        raise SchemaError(f"{name}: json fps is {meta['fps']}, expected {FPS}")
    if int(meta["n_frames"]) < 1:
        raise SchemaError(f"{name}: json n_frames is {meta['n_frames']}")
    return meta
