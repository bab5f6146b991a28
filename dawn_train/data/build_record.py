"""What a shard directory is built from, kept in its `build.json` (and in the manifest), and how two builds differ.

The fingerprint of a build is a hash of the inputs (video ids with the size and modification time of each of
their files: no file is read, and an edited or replaced file changes its size or mtime, as make and rsync
assume) and the options (split, seed, chunking, the audio feature with its model hash, the split files' hashes,
encoding, schema version).  `data shards` keeps the finished shards of a rerun with the same fingerprint and
rebuilds from scratch on any other: the shards are a pure function of the prepared videos and the options, so
old shards are never worth more than a rebuild, while keeping them by name is what put validation videos into
training shards.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dawn_train.files import read_json

INPUT_SUFFIXES = (".json", ".mp4", ".wav", ".npz")  # the files of one prepared video


def sha1_of(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()


def input_fingerprint(src: Path, ids: list[str]) -> str:
    """sha1 over (id, file, size, mtime) of every input file of the videos `ids` (no file is read)."""
    entries = []
    for video_id in ids:
        for suffix in INPUT_SUFFIXES:
            path = src / f"{video_id}{suffix}"
            stat = path.stat() if path.exists() else None
            entries.append([video_id, suffix, stat and stat.st_size, stat and stat.st_mtime_ns])
    return sha1_of(entries)


def build_record(src: Path, ids: list[str], options: dict) -> dict:
    """What a shard directory is built from (kept in `build.json` and in the manifest)."""
    return {"videos": len(ids), "inputs_sha1": input_fingerprint(src, ids), "options": options,
            "options_sha1": sha1_of(options)}


def read_json_or_none(path: Path):
    """The JSON at `path`, None when it is missing or unreadable (an earlier build record: none means rebuild)."""
    try:
        return read_json(path, "build record")
    except (OSError, ValueError):
        return None


def build_changes(old: dict | None, new: dict) -> list[str]:
    """How build record `new` differs from `old`, in words (empty when they are the same build)."""
    if not isinstance(old, dict) or "inputs_sha1" not in old:
        return ["no record of what they were built from"]
    changes = []
    if old["inputs_sha1"] != new["inputs_sha1"]:
        changes.append(f"input videos changed ({old.get('videos')} -> {new['videos']} videos, or files changed)")
    old_options = old.get("options") or {}
    for option in sorted(set(old_options) | set(new["options"])):
        if old_options.get(option) != new["options"].get(option):
            changes.append(f"{option} {old_options.get(option)!r} -> {new['options'].get(option)!r}")
    return changes
