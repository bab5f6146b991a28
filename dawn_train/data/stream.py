"""WebDataset pipelines read by every rank and dataloader worker of a (multi-node) job.

Shards are split into disjoint slots, one per (rank, worker): in every pass over the data the
shard list is permuted with a seed shared by all ranks (seed, epoch, pass) and slot s reads
shards s, s + S, s + 2S, ... (S = world size x workers).  Training streams are endless
(`resampled`: the next pass starts when a slot runs out of shards) and cut by `Passes` to
the same number of batches on every worker, so every rank sees the same number of batches and
DDP never waits on a rank that ran out.  Validation streams use the same slots when there are
enough shards, else every slot reads every shard and keeps every S-th sample (`KeepEvery`).  The validation clips
asked for are dealt over the readers, the same number to every rank; a split with fewer samples than that is read
pass after pass, each pass drawing other clips (`Passes`).

URLs are local paths, brace lists (`train-{000000..000009}.tar`) or `pipe:` commands
(`pipe:aws s3 cp s3://bucket/train-000000.tar -`), whatever webdataset opens.

Bad input never kills a run silently: a truncated tar, an undecodable mp4, a missing key or
mismatched lengths goes through one handler (`SkipCounter`) that warns naming the shard and
sample key, counts, and raises one clear line naming the shards, the counts and `max_skip_fraction`
once more than that fraction of the samples were bad.  Each batch carries `skipped` (bad samples
since the previous batch of that worker) so the DataModule can report totals at epoch end.
"""
from __future__ import annotations

import itertools
import math
import multiprocessing
import warnings
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from dawn_train.data.clips import ShortSample, collate
from dawn_train.data.sample import parse_sample
from dawn_train.data.skips import ShardLengths, SkipCounter, TooManyBadSamples


def epoch_counter(start: int = 0):
    """An int shared with the dataloader workers (`.value`), without a lock: only the main process writes it, and a
    lock made under one start method cannot be passed to workers started by another ("A SemLock created in a fork
    context ...")."""
    return multiprocessing.Value("i", start, lock=False)


def worker_of() -> tuple[int, int]:
    """(worker id, workers) of the calling dataloader worker; (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def worker_slot(rank: int, world_size: int) -> tuple[int, int]:
    """(slot, number of slots) of the calling dataloader worker."""
    worker, workers = worker_of()
    return rank * workers + worker, world_size * workers


class SlotShards(torch.utils.data.IterableDataset):
    """First pipeline stage: yields {"url": ...} for this worker's slot; endless if `resampled`."""

    def __init__(self, urls: list[str], rank: int, world_size: int, seed: int, epoch, resampled: bool,
                 workers: int, where: str):
        self.urls, self.rank, self.world_size, self.seed, self.epoch = list(urls), rank, world_size, seed, epoch
        self.resampled = resampled
        slots = world_size * max(workers, 1)
        self.per_sample = len(self.urls) < slots
        if self.per_sample and resampled:
            raise ValueError(f"{where}: {len(self.urls)} shards for {slots} readers (world size {world_size} x "
                             f"{max(workers, 1)} workers); write more, smaller shards (--samples-per-shard) or use fewer workers")

    def __iter__(self):
        slot, slots = worker_slot(self.rank, self.world_size)
        epoch = self.epoch.value
        for pass_index in range(1_000_000_000 if self.resampled else 1):
            order = np.random.default_rng([self.seed, epoch, pass_index]).permutation(len(self.urls))
            mine = order if self.per_sample else order[slot::slots]
            for index in mine:
                yield {"url": self.urls[index]}


def deal_position(rank: int, worker: int, world_size: int) -> int:
    """Where a reader sits in the order validation clips and samples are dealt: across ranks first, then workers."""
    return worker * world_size + rank


def reader_clips(clips: int, rank: int, worker: int, workers: int, world_size: int) -> int:
    """Validation clips of one reader: the same number for every rank, `clips` rounded up to a multiple of the
    world size, dealt round-robin (`deal_position`).  Equal, not nearly equal: under ZeRO-3 every forward gathers
    the weights from all ranks, so a rank with one batch more waits forever for the others (and under DDP a rank
    without a batch never joins the others' metric reduction)."""
    clips, readers = -(-max(clips, 1) // world_size) * world_size, world_size * workers
    return clips // readers + (deal_position(rank, worker, world_size) < clips % readers)


class KeepEvery:
    """Per-sample split for small validation sets, where every reader reads every shard.  The samples read pass
    after pass are numbered n = k * N + i (pass k, sample i of N) and dealt round-robin, number n to the reader at
    `position` (n + c) modulo the R readers, in cycles c of lcm(N, R) numbers.  Within a cycle every reader gets each
    sample of its class (i = position - c modulo gcd(N, R)) once, so the samples are used evenly and no two readers
    keep the same (sample, pass); the deal turns by one each cycle, so a reader whose class holds only unusable
    samples (e.g. the short tail chunks of every video, 3 readers of head/middle/tail chunks) gets the others' next
    cycle instead of no clip at all.  A reader whose first pass holds nothing for it (N < R) gets its clips from the
    later passes.  `Passes` resets it and records N after the first pass (cycle 0 does not need it)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.seen = 0  # raw samples read so far in this iteration, over all passes
        self.per_pass: int | None = None  # N, known after the first pass

    def __call__(self, source):
        worker, workers = worker_of()
        position, readers = deal_position(self.rank, worker, self.world_size), self.world_size * workers
        for sample in source:
            number, self.seen = self.seen, self.seen + 1
            cycle = number // math.lcm(self.per_pass, readers) if self.per_pass else 0
            if (number + cycle) % readers == position:
                yield sample


class SampleShuffle:
    """Shuffle buffer over raw samples, seeded by (seed, epoch, slot) so runs are reproducible."""

    def __init__(self, size: int, rank: int, world_size: int, seed: int, epoch):
        self.size, self.rank, self.world_size, self.seed, self.epoch = size, rank, world_size, seed, epoch

    def __call__(self, source):
        slot, _ = worker_slot(self.rank, self.world_size)
        rng = np.random.default_rng([self.seed, 1, self.epoch.value, slot])
        buffer = []
        for sample in source:
            buffer.append(sample)
            if len(buffer) >= self.size:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))


class ClipStage:
    """Parse a raw sample and draw a clip; runs in the worker with a per-(epoch, slot) RNG.

    `lengths` gives the clip length of each batch (fixed, or drawn per batch for the A2V
    curriculum), so every sample of one batch has the same length."""

    def __init__(self, draw: Callable, keys, counter: SkipCounter, batch_size: int, rank: int, world_size: int,
                 seed: int, epoch, lengths: tuple[int, int] | None, feature_dim: int | None, where: str = "shards"):
        self.draw, self.keys, self.counter, self.batch_size = draw, tuple(keys), counter, batch_size
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.lengths, self.feature_dim = lengths, feature_dim
        self.rng = None
        self.noted_short, self.short_total = False, 0
        self.where = where  # named in errors (the manifest)
        self.pass_index = 0  # set by `Passes`: a split read again draws other clips from its samples
        self.offset = 0  # clips drawn in earlier passes (a batch may span two passes: one length per batch)

    def length_of_batch(self, batch_index: int) -> int | None:
        if self.lengths is None:
            return None
        low, high = self.lengths
        return low if low == high else int(np.random.default_rng([self.seed, 7, self.epoch.value, self.slot, batch_index]).integers(low, high + 1))

    def __call__(self, source):
        self.slot, _ = worker_slot(self.rank, self.world_size)
        again = [self.pass_index] if self.pass_index else []  # pass 0 draws what a single pass always drew
        self.rng = np.random.default_rng([self.seed, self.epoch.value, self.slot, *again])
        produced = short_in_a_row = 0
        for raw in source:
            try:
                parsed = parse_sample(raw, self.keys, self.feature_dim)
                sample = self.draw(parsed, self.rng, self.length_of_batch((self.offset + produced) // self.batch_size))
            except ShortSample as exc:  # the tail chunk of a long video: sound, skipped, not counted as bad
                short_in_a_row += 1
                self.short_total += 1
                self.short(exc, short_in_a_row)
                continue
            except (ValueError, KeyError) as exc:  # SchemaError, VideoError, AudioError are ValueErrors
                self.counter.bad_sample(exc, raw.get("__url__"))
                continue
            produced, short_in_a_row = produced + 1, 0
            yield sample

    def short(self, exc: ShortSample, in_a_row: int) -> None:
        """Skip a sample shorter than the clip, once with a note; stop when nothing but such samples come."""
        if in_a_row == 1 and not self.noted_short:
            self.noted_short = True
            warnings.warn(f"skipping samples shorter than the clip (not counted as bad): {exc}", stacklevel=3)
        if in_a_row >= self.counter.min_samples:
            raise TooManyBadSamples(
                f"{self.where}: {in_a_row} samples in a row are shorter than the clip asked ({exc}): lower the clip "
                f"length (data.init_args.clip_len / clip_len_max) or write the shards with longer chunks "
                f"(`dawn-train data shards --chunk-frames`)")


def make_pipeline(urls: list[str], draw: Callable, keys, batch_size: int, *, train: bool, batches_per_worker: int,
                  workers: int, rank: int = 0, world_size: int = 1, seed: int = 0, epoch=None,
                  lengths: tuple[int, int] | None = None, shuffle_buffer: int = 64, feature_dim: int | None = None,
                  max_skip_fraction: float = 0.1, where: str = "shards", val_clips: int | None = None,
                  shard_samples: dict[str, int] | None = None):
    """Build one split's pipeline: slot shards -> tar samples -> shuffle -> clips (pass after pass) -> batches.

    Every worker yields `batches_per_worker` full batches (training), or its share of the `val_clips` clips of all
    ranks in batches whose last may be partial (validation; `reader_clips`; default: `batches_per_worker` full
    batches).  `shard_samples` (url -> samples, from the manifest) lets it notice shards cut short."""
    import webdataset as wds

    epoch = epoch if epoch is not None else epoch_counter()
    counter = SkipCounter(max_skip_fraction)
    source = SlotShards(urls, rank, world_size, seed, epoch, resampled=train, workers=workers, where=where)
    stages = [source, wds.tarfile_to_samples(handler=counter), counter.count_read]
    if shard_samples:
        stages.append(ShardLengths(shard_samples, counter))
    keep = KeepEvery(rank, world_size) if source.per_sample else None
    if keep is not None:
        stages.append(keep)
    if train and shuffle_buffer > 1:
        stages.append(SampleShuffle(shuffle_buffer, rank, world_size, seed, epoch))
    clips = ClipStage(draw, keys, counter, batch_size, rank, world_size, seed, epoch, lengths, feature_dim, where)
    stages.append(clips)

    # Training batches are always full (equal shapes, equal counts per rank); validation keeps the rest.
    loaders = max(workers, 1)  # worker processes of this rank (0 workers: the main process reads)
    if train or val_clips is None:
        quotas = [batches_per_worker * batch_size] * loaders
    else:
        quotas = [reader_clips(val_clips, rank, worker, loaders, world_size) for worker in range(loaders)]
    patience = world_size * loaders if keep is not None else 1
    batched = wds.DataPipeline(Passes(wds.DataPipeline(*stages), clips, quotas, counter, keep, patience),
                               wds.batched(batch_size, collation_fn=CollateCounting(counter), partial=not train))
    return Batches(batched, sum(math.ceil(q / batch_size) for q in quotas))


# Workers started by spawn or forkserver (macOS, and Linux from Python 3.14 on) receive the pipeline pickled, so
# every stage is an instance of a module-level class: no closures, and not webdataset's `with_length`, which builds a
# class at run time that a worker cannot import.
class CollateCounting:
    """Collates a batch and adds `skipped`: the bad samples this worker met since its last batch."""

    def __init__(self, counter: SkipCounter):
        self.counter = counter

    def __call__(self, samples: list[dict]) -> dict:
        batch = collate(samples)
        batch["skipped"] = torch.tensor(self.counter.take_unreported())
        return batch


class Batches(torch.utils.data.IterableDataset):
    """A split's batch pipeline with its exact batch count per epoch as `len()` (over all workers of the rank)."""

    def __init__(self, pipeline, length: int):
        self.pipeline, self.length = pipeline, length

    def __iter__(self):
        return iter(self.pipeline)

    def __len__(self) -> int:
        return self.length


class Passes(torch.utils.data.IterableDataset):
    """`quotas[worker]` clips of a one-pass pipeline, read pass after pass (endless training shards need one pass; a
    validation split with fewer samples than the clips asked for is read several times), pass k drawing its clips
    with its own RNG.  webdataset's `with_epoch` repeated a pass with the same draws and counted batches, not clips:
    the quality LFG's "32 validation pairs" of 4 videos were 16, the same 4 pairs 4 times, and a correlation over
    them swung between -0.8 and +0.97 from one validation to the next.

    It stops early when a pass reads nothing (no readable shard) or when `patience` passes in a row gave no clip
    (every sample bad; a per-sample reader may rightly get nothing from up to readers - 1 passes in a row), and
    raises when that leaves it without any clip."""

    def __init__(self, samples, clips: ClipStage, quotas: list[int], counter: SkipCounter,
                 keep: KeepEvery | None = None, patience: int = 1):
        self.samples, self.clips, self.quotas, self.counter = samples, clips, quotas, counter
        self.keep, self.patience = keep, patience

    def __iter__(self):
        worker, _ = worker_of()
        produced, quota, idle = 0, self.quotas[worker], 0
        if self.keep is not None:
            self.keep.seen, self.keep.per_pass = 0, None
        if quota == 0:
            return
        for pass_index in itertools.count():
            self.clips.pass_index, self.clips.offset = pass_index, produced
            if self.keep is not None and pass_index == 1:
                self.keep.per_pass = self.keep.seen or None  # N (KeepEvery's cycles)
            read, before = self.counter.read + self.counter.tar_errors, produced
            for sample in self.samples:
                yield sample
                produced += 1
                if produced == quota:
                    return
            idle = idle + 1 if produced == before else 0
            if self.counter.read + self.counter.tar_errors == read or idle >= self.patience:
                break
        if 0 < produced < quota:
            warnings.warn(f"{self.clips.where}: reader {self.clips.rank}/{worker} (rank/worker) found {produced} usable "
                          f"clips of the {quota} asked (under DeepSpeed ZeRO-3 the ranks must run equal batches)")
        if produced == 0:  # a rank without a batch would hang the others (DDP, ZeRO-3): say why instead
            raise TooManyBadSamples(
                f"{self.clips.where}: reader {self.clips.rank}/{worker} (rank/worker) got no clip for its {quota} "
                f"asked: of the {self.counter.read} samples read, {self.counter.bad} were bad, {self.clips.short_total} "
                f"shorter than the clip, and {self.counter.tar_errors} shards unreadable; check them with `dawn-train "
                f"data inspect` or lower the clip length")


class EpochDataLoader(DataLoader):
    """A DataLoader over a pipeline whose shuffles depend on a shared epoch counter: every new
    iteration (one per training epoch) advances it before the workers start."""

    def __init__(self, pipeline, epoch, *, advance: bool, **kwargs):
        super().__init__(pipeline, batch_size=None, **kwargs)
        self.epoch, self.advance = epoch, advance

    def __iter__(self):
        if self.advance:
            self.epoch.value += 1
        return super().__iter__()

