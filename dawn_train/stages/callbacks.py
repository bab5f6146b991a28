"""Callbacks: throughput and data health (every stage), sample videos (A2V-FDM validation)."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from dawn_train.data.schema import SAMPLE_RATE
from dawn_train.data.video import encode_mp4
from dawn_train.log import get_logger
from dawn_train.tracking.media import flow_to_rgb, image_grid, log_images, log_video, to_uint8_video

log = get_logger(__name__)


def batch_size_of(batch: dict) -> int:
    return len(batch["key"]) if "key" in batch else next(v for v in batch.values() if torch.is_tensor(v)).shape[0]


class Throughput(L.Callback):
    """Logs `perf/samples_per_s` and `perf/steps_per_s` (per rank, averaged over `window` steps)
    and, on CUDA, `perf/peak_mem_gb`."""

    def __init__(self, window: int = 10):
        self.window = window
        self._start, self._samples, self._steps = None, 0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._samples += batch_size_of(batch)
        self._steps += 1
        if self._steps >= self.window:
            seconds = time.perf_counter() - self._start
            metrics = {"perf/samples_per_s": self._samples / seconds, "perf/steps_per_s": self._steps / seconds}
            if torch.cuda.is_available() and pl_module.device.type == "cuda":
                metrics["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
            self._start, self._samples, self._steps = time.perf_counter(), 0, 0


class DataHealth(L.Callback):
    """Reports the bad samples the data pipeline skipped (`data/skipped_train`, `data/skipped_val`)."""

    def _report(self, trainer, pl_module, split: str):
        datamodule = getattr(trainer, "datamodule", None)
        skipped = getattr(datamodule, "skipped", None)
        if skipped is None:
            return
        pl_module.log(f"data/skipped_{split}", float(skipped[split]), on_step=False, on_epoch=True, reduce_fx="sum",
                      sync_dist=True)
        if skipped[split] and trainer.is_global_zero:
            log.warning("%d bad %s samples skipped so far (see warnings for names)", skipped[split], split)

    def on_train_epoch_end(self, trainer, pl_module):
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "val")


class SampleVideo(L.Callback):
    """Every `every_n_val`-th validation (not in the sanity check): DDIM-samples the first clip of the first
    batch with the module's sampling (EMA) weights through the same `animate` that generation uses, logs it as
    a W&B video with its audio and an image strip (ground truth / generated / generated flow), and writes the mp4
    under the run's `samples/`.

    The module provides `sample(inputs) -> {"video", "flow", ...}` and returns its prepared `inputs` from
    `validation_step` (A2VStage does both)."""

    def __init__(self, every_n_val: int = 1, max_strip_frames: int = 8):
        self.every_n_val, self.max_strip_frames = every_n_val, max_strip_frames
        self._validations = 0
        self.last_path: Path | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if (batch_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict)
                or self._validations % self.every_n_val):
            return
        # Every rank samples (its own first clip), rank 0 alone logs: under DeepSpeed ZeRO-3 each forward gathers
        # the sharded weights from all ranks, and a rank-0-only sample waited forever for the others.
        with torch.no_grad():
            out = pl_module.sample(outputs["inputs"])
        if trainer.is_global_zero:
            self.last_path = self.log_sample(trainer, pl_module, batch, out)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._validations += 1

    @torch.no_grad()
    def log_sample(self, trainer, pl_module, batch: dict, out: dict) -> Path:
        """Log and write `out`, the module's `sample` of the batch's first clip."""
        video = to_uint8_video(out["video"][0])  # (L, H, W, 3)
        audio = batch.get("audio")
        audio = audio[0].float().cpu().numpy() if torch.is_tensor(audio) else None
        mp4 = encode_mp4(video, audio=audio, sample_rate=SAMPLE_RATE)
        step = trainer.global_step
        log_video(pl_module.loggers, "val/sample", video, step, mp4=mp4)
        length = video.shape[0]
        pick = np.linspace(0, length - 1, min(self.max_strip_frames, length)).round().astype(int).tolist()
        real = batch["frames"][0, pick].float() / 255
        fake = out["video"][0, pick].float()
        flow = F.interpolate(flow_to_rgb(out["flow"][0, pick]), size=real.shape[-2:], mode="nearest")
        steps = getattr(pl_module.hparams, "sample_steps", None)
        log_images(pl_module.loggers, "val/strip", image_grid([real.cpu(), fake.cpu(), flow.cpu()], max_items=8), step,
                   caption=f"ground truth / generated (EMA, DDIM {steps}) / generated flow; frames {pick}")
        root = Path(trainer.default_root_dir) / "samples"
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"val_step{step:07d}.mp4"
        path.write_bytes(mp4)
        return path
