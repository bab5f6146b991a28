"""Callbacks shared by every stage: throughput and data health."""
from __future__ import annotations

import time

import lightning as L
import torch


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
            print(f"[data] {skipped[split]} bad {split} samples skipped so far (see warnings for names)")

    def on_train_epoch_end(self, trainer, pl_module):
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "val")
