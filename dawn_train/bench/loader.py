"""`dawn-train bench loader`: clips/s, decoded frames/s and MB/s of a stage's training stream.

Bad samples (a truncated shard, an undecodable video) are skipped and counted as in training (`skipped`),
and past `max_skip_fraction` the benchmark stops with the one-line error that names the shards."""
from __future__ import annotations

import time

from dawn_train.data.datamodule import A2VDataModule, LFGDataModule, PBNetDataModule

FRAMES_PER_CLIP = {"lfg": lambda clip_len: 2, "pbnet": lambda clip_len: 0, "a2v": lambda clip_len: clip_len + 1}


def make_datamodule(stage: str, shards: str, clip_len: int, batch_size: int, workers: int, clips: int,
                    max_skip_fraction: float = 0.1):
    common = dict(batch_size=batch_size, num_workers=workers, clips_per_epoch=clips, max_skip_fraction=max_skip_fraction)
    if stage == "lfg":
        return LFGDataModule(shards, **common)
    if stage == "pbnet":
        return PBNetDataModule(shards, window=clip_len, **common)
    if stage == "a2v":
        return A2VDataModule(shards, clip_len=clip_len, **common)
    raise ValueError(f"--stage must be lfg, pbnet or a2v, got {stage!r}")


def bench_loader(shards: str, stage: str = "a2v", clip_len: int = 40, workers: int = 1, batch_size: int = 4,
                 batches: int = 50, warmup: int = 2, max_skip_fraction: float = 0.1) -> dict:
    """Iterate `batches` training batches after `warmup` and report throughput (total and per worker) and
    the bad samples skipped."""
    dm = make_datamodule(stage, shards, clip_len, batch_size, workers, clips=(batches + warmup) * batch_size,
                         max_skip_fraction=max_skip_fraction)
    manifest_split = dm.manifest_split("train")
    bytes_per_sample = sum(s["bytes"] for s in manifest_split["shards"]) / max(manifest_split["samples"], 1)
    loader = dm.train_dataloader()
    iterator = iter(loader)
    skipped = 0
    for _ in range(warmup):
        skipped += int(next(iterator)["skipped"])
    start, clips = time.perf_counter(), 0
    for batch in iterator:
        clips += len(batch["key"])
        skipped += int(batch["skipped"])
    seconds = time.perf_counter() - start
    cores = max(workers, 1)
    clips_per_s = clips / seconds
    frames_per_s = clips_per_s * FRAMES_PER_CLIP[stage](clip_len)
    mb_per_s = clips_per_s * bytes_per_sample / 1e6  # each clip reads one whole sample of the stream
    return {
        "stage": stage, "clip_len": clip_len, "workers": workers, "batch_size": batch_size, "clips": clips,
        "seconds": round(seconds, 3), "clips_per_s": round(clips_per_s, 1), "frames_per_s": round(frames_per_s, 1),
        "mb_per_s": round(mb_per_s, 2), "clips_per_s_per_core": round(clips_per_s / cores, 1),
        "frames_per_s_per_core": round(frames_per_s / cores, 1), "mb_per_s_per_core": round(mb_per_s / cores, 2),
        "skipped": skipped,
    }
