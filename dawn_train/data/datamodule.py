"""LightningDataModules over WebDataset shards, one per DAWN stage, configured from YAML.

Epoch sizes come from the shard manifest (no tar is read to count).  Data position on resume:
the epoch counter is saved in the checkpoint (`state_dict`), so a resumed run draws with the next
epoch's shard order and shuffles.  A run stopped in the middle of an epoch finishes that epoch's
remaining batches from the next epoch's order: not a replay of the lost position (streams have no
random access), so within that epoch some samples come twice and others not at all.
"""
from __future__ import annotations

import math
import multiprocessing
import warnings

import lightning as L

from dawn_train.data import schema
from dawn_train.data.clips import A2VClip, LFGPair, pbnet_window
from dawn_train.data.schema import FEATURE_KINDS
from dawn_train.data.shards import MANIFEST, load_manifest, shard_root, shard_urls
from dawn_train.data.stream import EpochDataLoader, epoch_counter, make_pipeline

# Lightning warns that `__len__` of a multi-worker IterableDataset may be inaccurate; ours is exact:
# every worker yields exactly `batches_per_worker` batches (validation: its share of the clips asked) of its own shards
# (see data/stream.py).
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

# imported once by the forkserver, so that each worker it forks starts ready (~0.15 s per epoch instead of ~4 s)
FORKSERVER_PRELOAD = ["torch", "webdataset", "dawn_train.data.datamodule"]


class ShardDataModule(L.LightningDataModule):
    """Common part: shard lists from the manifest, rank-aware pipelines, skip accounting.

    Args:
        shards: directory with `manifest.json` and the `train-*.tar` / `val-*.tar` shards.
        batch_size: per-device batch size.
        num_workers: dataloader worker processes per rank.
        clips_per_epoch: training clips per epoch over all ranks (default: from the manifest).
        val_clips: validation clips per epoch over all ranks (default: one per val sample), rounded up to the same
            number on every rank (ZeRO-3 needs equal batches; data/stream.py `reader_clips`).
        shuffle_buffer: samples held for shuffling in each worker.
        max_skip_fraction: fail once more than this fraction of samples was bad.
        seed: seeds shard order, shuffles and clip positions (with epoch, rank and worker).
        audio_feature: the audio feature the run is meant for ("logmel", "hubert"; None: any), checked against
            the shards' manifest at set-up, so that shards of the other feature fail before training, not after.
        worker_start_method: how the worker processes start: "fork", "forkserver" or "spawn" (None: Python's default
            for the platform: fork on Linux before Python 3.14, forkserver from 3.14, spawn on macOS).  "forkserver"
            starts them from a clean single-threaded process: a rank that already runs communication threads (DDP,
            DeepSpeed) then never calls fork itself, which can deadlock when another thread holds a lock that fork
            needs.  The server imports torch and the data code once (`FORKSERVER_PRELOAD`), a few seconds at the
            first loader; later epochs start their workers as fast as fork.
    """

    keys: tuple[str, ...] = ()

    def __init__(self, shards: str, batch_size: int = 8, num_workers: int = 2, clips_per_epoch: int | None = None,
                 val_clips: int | None = None, shuffle_buffer: int = 32, max_skip_fraction: float = 0.1, seed: int = 0,
                 audio_feature: str | None = None, worker_start_method: str | None = None):
        super().__init__()
        methods = multiprocessing.get_all_start_methods()
        if worker_start_method is not None and worker_start_method not in methods:
            raise ValueError(f"data.init_args.worker_start_method: {worker_start_method!r} is not a start method of "
                             f"this platform ({', '.join(methods)}; or null for Python's default)")
        self.worker_start_method = worker_start_method
        if audio_feature is not None and audio_feature not in FEATURE_KINDS:
            raise ValueError(f"data.init_args.audio_feature: {audio_feature!r} is not one of {', '.join(FEATURE_KINDS)}")
        self.audio_feature = audio_feature
        self.shards, self.batch_size, self.num_workers = shards, batch_size, num_workers
        self.clips_per_epoch, self.val_clips = clips_per_epoch, val_clips
        self.shuffle_buffer, self.max_skip_fraction, self.seed = shuffle_buffer, max_skip_fraction, seed
        self.train_epoch = epoch_counter(-1)  # advanced to 0 when the first epoch starts
        self.skipped = {"train": 0, "val": 0}
        self.manifest: dict | None = None

    # --- what a stage varies -------------------------------------------------------------
    def draw(self, train: bool):
        """What one sample becomes: a callable (parsed sample, rng, length) -> dict of arrays."""
        raise NotImplementedError

    def lengths(self, train: bool) -> tuple[int, int] | None:
        return None

    def default_clips(self, split: dict) -> int:
        """Training clips per epoch when `clips_per_epoch` is not set."""
        return split["samples"]

    # --- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.manifest = load_manifest(self.shards)
        kind = (self.manifest.get("feature") or {}).get("type")
        if self.audio_feature is not None and kind != self.audio_feature:
            raise ValueError(f"{shard_root(self.shards) / MANIFEST}: the shards hold {kind} audio features, the config asks "
                             f"for {self.audio_feature} (data.init_args.audio_feature): write the shards with `dawn-train "
                             f"data shards --features {self.audio_feature}` or set data.init_args.audio_feature: {kind}")
        sizes = self.manifest.get("frame_size")
        if schema.FRAMES in self.keys and isinstance(sizes, list):  # one batch stacks frames of one size
            raise ValueError(f"{shard_root(self.shards) / MANIFEST}: the shards hold frames of several sizes ({sizes} px); "
                             f"a batch needs one: write the videos of each size to shards of their own")

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, clips: int):
        if self.manifest is None:
            self.setup()
        rank, world = self._world()
        train = split == "train"
        workers = max(self.num_workers, 1)
        batches_per_worker = max(1, math.ceil(clips / (self.batch_size * world * workers)))
        epoch = self.train_epoch if train else epoch_counter()
        urls = shard_urls(self.shards, split)
        counts = [shard.get("samples") for shard in self.manifest["splits"][split]["shards"]]
        pipeline = make_pipeline(
            urls, self.draw(train), self.keys, self.batch_size, train=train,
            batches_per_worker=batches_per_worker, workers=self.num_workers, rank=rank, world_size=world,
            seed=self.seed, epoch=epoch, lengths=self.lengths(train), shuffle_buffer=self.shuffle_buffer,
            feature_dim=self.manifest["feature"]["dim"], max_skip_fraction=self.max_skip_fraction,
            where=str(shard_root(self.shards) / MANIFEST),
            val_clips=None if train else clips,  # validation: the clips asked, dealt over every rank's workers
            shard_samples={url: count for url, count in zip(urls, counts) if count is not None},
        )
        context = self.worker_start_method if self.num_workers > 0 else None  # no workers: nothing to start
        if context == "forkserver":  # takes effect when the server starts, with the first such loader
            multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
        return EpochDataLoader(pipeline, epoch, advance=train, num_workers=self.num_workers,
                               persistent_workers=False, pin_memory=False, multiprocessing_context=context)

    def train_dataloader(self):
        split = self.manifest_split("train")
        return self._loader("train", self.clips_per_epoch or self.default_clips(split))

    def val_dataloader(self):
        split = self.manifest_split("val")
        return self._loader("val", self.val_clips or split["samples"])

    def manifest_split(self, name: str) -> dict:
        if self.manifest is None:
            self.setup()
        return self.manifest["splits"][name]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        skipped = batch.pop("skipped", None)
        if skipped is not None:
            trainer = getattr(self, "trainer", None)
            split = "train" if trainer is None or trainer.training else "val"
            self.skipped[split] += int(skipped)
        return batch

    def state_dict(self) -> dict:
        return {"train_epoch": self.train_epoch.value}

    def load_state_dict(self, state: dict) -> None:
        # The loader advances the counter when the next epoch starts.
        self.train_epoch.value = int(state.get("train_epoch", -1))

    @property
    def feature_dim(self) -> int:
        if self.manifest is None:
            self.setup()
        return self.manifest["feature"]["dim"]


class LFGDataModule(ShardDataModule):
    """(source, driving) frame pairs: batch `source`, `driving` uint8 (B, 3, H, W).

    Default epoch: one pair per second of training video.  `blink_pairs`: the fraction of training pairs whose
    driving frame is drawn among the chunk's blink frames (see `LFGPair`); validation pairs are always uniform."""

    keys = schema.STAGE_KEYS["lfg"]

    def __init__(self, shards: str, blink_pairs: float = 0.0, **kwargs):
        super().__init__(shards, **kwargs)
        self.blink_pairs = blink_pairs
        LFGPair(blink_pairs)  # validates now, not in a worker

    def draw(self, train: bool):
        return LFGPair(self.blink_pairs if train else 0.0)

    def default_clips(self, split: dict) -> int:
        return max(1, split["frames"] // schema.FPS)


class PBNetDataModule(ShardDataModule):
    """Windows of `window` frames: batch `audio_feat` (B, T, D), `pose` (B, T, 6), `blink` (B, T, 2),
    `length` (B,) (windows of chunks shorter than `window` are zero-padded)."""

    keys = schema.STAGE_KEYS["pbnet"]

    def __init__(self, shards: str, window: int = 200, **kwargs):
        super().__init__(shards, **kwargs)
        self.window = window

    def draw(self, train: bool):
        return pbnet_window

    def lengths(self, train: bool):
        return (self.window, self.window)

    def default_clips(self, split: dict) -> int:
        return max(1, split["frames"] // self.window)


class A2VDataModule(ShardDataModule):
    """Clips for A2V-FDM: batch `frames` uint8 (B, L, 3, H, W), `ref_frame` (B, 3, H, W),
    `audio_feat` (B, L, D), `pose` (B, L, 6), `blink` (B, L, 2), `face_box` (B, L, 4),
    `mouth_lmk` (B, L, K, 2), `audio` (B, L * 640) 16 kHz, `ref_pose`, `ref_blink`, `ref_face_box`.

    Curriculum: stage 1 uses `clip_len=20, reference="first"`; stage 2 draws L per batch from
    `[clip_len, clip_len_max]` (official 30-40) with `reference="random"`."""

    keys = schema.STAGE_KEYS["a2v"]

    def __init__(self, shards: str, clip_len: int = 20, clip_len_max: int | None = None, reference: str = "first",
                 val_clip_len: int | None = None, **kwargs):
        super().__init__(shards, **kwargs)
        if clip_len_max is not None and clip_len_max < clip_len:
            raise ValueError(f"clip_len_max ({clip_len_max}) < clip_len ({clip_len})")
        self.clip_len, self.clip_len_max, self.reference = clip_len, clip_len_max, reference
        self.val_clip_len = val_clip_len or clip_len
        A2VClip(reference)  # validates `reference` now, not in a worker

    def draw(self, train: bool):
        return A2VClip(self.reference)

    def lengths(self, train: bool):
        if not train:
            return (self.val_clip_len, self.val_clip_len)
        return (self.clip_len, self.clip_len_max or self.clip_len)

    def default_clips(self, split: dict) -> int:
        return max(1, split["frames"] // self.clip_len)
