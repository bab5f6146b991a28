"""`ScaleReport`: what a distributed run really does, per rank.

Logs `effective_batch_size` = per-device batch x devices x nodes x accumulate_grad_batches (plus
`world_size`, `per_device_batch_size`, `accumulate_grad_batches`, `strategy`) as hyper-parameters
and as a metric, and writes one JSON file per rank with the batches it saw
(`<dir>/rank-<r>.json`: train batches per epoch and in total, validation batches), so tests and
users can check that every rank got the same number of batches (no DDP hang, no lost shards).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import lightning as L

from dawn_train.log import get_logger
from dawn_train.stages.callbacks import batch_size_of

log = get_logger(__name__)


class ScaleReport(L.Callback):
    """Args:
        out_dir: where the per-rank files go (default `<trainer.default_root_dir>/ranks`).
        reference_batch_size: the effective batch size the config's learning rate was tuned for;
            a run with another effective batch size logs `lr_scale_linear` (effective / reference,
            the linear scaling rule) and warns once, so a changed device count is never silent.
    """

    def __init__(self, out_dir: Optional[str] = None, reference_batch_size: Optional[int] = None):
        self.out_dir, self.reference_batch_size = out_dir, reference_batch_size
        self.train_batches: dict[int, int] = {}
        self.val_batches = 0
        self._reported = False

    @staticmethod
    def scale(trainer, per_device_batch_size: int) -> dict:
        devices = trainer.num_devices
        nodes = trainer.num_nodes
        accumulate = trainer.accumulate_grad_batches
        return {"per_device_batch_size": per_device_batch_size, "devices_per_node": devices, "num_nodes": nodes,
                "world_size": trainer.world_size, "accumulate_grad_batches": accumulate,
                "effective_batch_size": per_device_batch_size * devices * nodes * accumulate,
                "strategy": type(trainer.strategy).__name__,
                "cluster_environment": type(getattr(trainer.strategy, "cluster_environment", None)).__name__}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epoch = trainer.current_epoch
        self.train_batches[epoch] = self.train_batches.get(epoch, 0) + 1
        if self._reported:
            return
        self._reported = True
        info = self.scale(trainer, batch_size_of(batch))
        if self.reference_batch_size:
            info["reference_batch_size"] = self.reference_batch_size
            info["lr_scale_linear"] = info["effective_batch_size"] / self.reference_batch_size
            if info["lr_scale_linear"] != 1 and trainer.is_global_zero:
                log.warning("effective batch size %d differs from the reference %d: linear rule says lr x %.3g",
                            info["effective_batch_size"], self.reference_batch_size, info["lr_scale_linear"])
        for logger in trainer.loggers:
            logger.log_hyperparams(info)
        pl_module.log("effective_batch_size", float(info["effective_batch_size"]), on_step=True, on_epoch=False,
                      rank_zero_only=True)
        if trainer.is_global_zero:
            log.info("%s", info)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val_batches += 1

    def _write(self, trainer) -> None:
        out = Path(self.out_dir or Path(trainer.default_root_dir) / "ranks")
        out.mkdir(parents=True, exist_ok=True)
        record = {"global_rank": trainer.global_rank, "world_size": trainer.world_size,
                  "train_batches_per_epoch": {str(k): v for k, v in sorted(self.train_batches.items())},
                  "train_batches": sum(self.train_batches.values()), "val_batches": self.val_batches,
                  "global_step": trainer.global_step}
        path = out / f"rank-{trainer.global_rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)

    def on_train_epoch_end(self, trainer, pl_module):
        self._write(trainer)

    def on_fit_end(self, trainer, pl_module):
        self._write(trainer)
