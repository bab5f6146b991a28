"""A callback for the requeue test: the job's first start waits after its first checkpoint until SLURM stops it, so
the test's requeue always lands mid-run (a short job could otherwise finish between two polls of the test)."""
from __future__ import annotations

import os
import time

from lightning.pytorch import Callback


class HoldFirstStart(Callback):
    """On the job's first start (`SLURM_RESTART_COUNT` unset or 0), stop before the batch after global step
    `after_step` until Lightning receives SIGTERM (the requeue) or `timeout` seconds pass; later starts run on."""

    def __init__(self, after_step: int, timeout: float = 300.0):
        self.after_step = after_step
        self.timeout = timeout

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if os.environ.get("SLURM_RESTART_COUNT", "0") != "0" or trainer.global_step < self.after_step:
            return
        print(f"[hold] first start held after step {trainer.global_step}", flush=True)
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.2)
