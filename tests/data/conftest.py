"""Helpers for the data tests: prepared-video directories with chosen names, tar surgery."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np

from dawn_train.data import schema

PREPARED = (".json", ".mp4", ".wav", ".npz")


def copy_videos(raw: Path, dst: Path, names: dict[str, str] | None = None) -> list[str]:
    """Copy prepared videos of `raw` to `dst`, renamed old id -> new id (default: all, same names)."""
    names = names or {path.stem: path.stem for path in sorted(raw.glob("*.json"))}
    dst.mkdir(parents=True, exist_ok=True)
    for old, new in names.items():
        for suffix in PREPARED:
            shutil.copy2(raw / f"{old}{suffix}", dst / f"{new}{suffix}")
    return list(names.values())


def corrupt_member(path: Path, member: str, n_bytes: int = 4096, seed: int = 0) -> str:
    """Overwrite `n_bytes` random bytes in the middle of `member` of the first sample of tar `path`,
    in place (the tar stays well-formed: headers and sizes are untouched).  Returns the sample key."""
    with tarfile.open(path) as tar:
        info = next(m for m in tar if schema.split_member(m.name)[1] == member)
    assert info.size > n_bytes, f"{info.name} has only {info.size} bytes"
    with open(path, "r+b") as f:
        f.seek(info.offset_data + (info.size - n_bytes) // 2)
        f.write(np.random.default_rng(seed).bytes(n_bytes))
    return schema.split_member(info.name)[0]


def tar_metas(path: Path) -> list[dict]:
    """The json metadata of every sample of a tar, in order."""
    with tarfile.open(path) as tar:
        return [json.loads(tar.extractfile(m).read()) for m in tar if schema.split_member(m.name)[1] == schema.META]


def rewrite_tar(path: Path, edit) -> None:
    """Rewrite tar `path` with `edit(member name, bytes) -> bytes` applied to every member."""
    with tarfile.open(path) as tar:
        members = [(m, edit(m.name, tar.extractfile(m).read())) for m in tar]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def audio_only_mp4(seconds: float = 1.0) -> bytes:
    """A valid mp4 with one AAC audio stream and no video stream."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=schema.SAMPLE_RATE)
        stream.layout = "mono"
        samples = np.zeros((1, int(seconds * schema.SAMPLE_RATE)), dtype=np.float32)
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = schema.SAMPLE_RATE, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def raw_samples(path) -> list[dict]:
    """The samples of tar `path` as the loader sees them: sample key -> {member: bytes, "__key__", "__url__"}."""
    samples: dict = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, name = schema.split_member(member.name)
            samples.setdefault(key, {"__key__": key, "__url__": str(path)})[name] = tar.extractfile(member).read()
    return list(samples.values())
