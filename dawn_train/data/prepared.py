"""The prepared-video layout that `data shards` reads: per video `<id>.mp4` (square face crop, 25 fps,
H.264), `<id>.wav` (16 kHz mono PCM16), `<id>.npz` (per-frame labels: pose, blink, face_box, mouth_lmk,
and whatever else the writer adds) and `<id>.json` (metadata).  `data synth` and `data prep` write it.

Every file is written under a temporary name and renamed; `<id>.json` comes last, so its presence marks a
complete video (what `shards.list_videos` and a resumed prep look for)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dawn_train.data.audio import write_wav


def is_prepared(out: Path, video_id: str) -> bool:
    return (out / f"{video_id}.json").is_file()


def write_prepared(out: Path, video_id: str, mp4: bytes, audio: np.ndarray, labels: dict, meta: dict) -> None:
    """Write one video's four files into `out` (atomically, `.json` last)."""
    stem = out / video_id
    parts = {
        ".mp4": lambda path: path.write_bytes(mp4),
        ".wav": lambda path: write_wav(str(path), audio),
        ".npz": lambda path: np.savez(path.open("wb"), **labels),
        ".json": lambda path: path.write_text(json.dumps(meta, indent=1)),
    }
    for suffix, write in parts.items():
        tmp = stem.with_name(stem.name + ".tmp" + suffix)
        write(tmp)
        tmp.replace(stem.with_name(stem.name + suffix))
