"""`dawn-train bench step -c CONFIG`: optimizer steps/s, samples/s and peak memory of a stage config.

The config is instantiated as `dawn-train fit` would (model, data, accelerator, precision), then
trained for `warmup + steps` steps without loggers or checkpoints; only the last `steps` are timed."""
from __future__ import annotations

import resource
import time

import lightning as L
import torch

from dawn_train.stages.callbacks import batch_size_of
from dawn_train.stages.cli import DawnCLI


class StepTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.samples, self.steps = warmup, None, 0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.start = time.perf_counter()
        elif self.start is not None:
            self.samples += batch_size_of(batch)
            self.steps += 1

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self.start if self.start else float("nan")


def bench_step(config: str | list[str], steps: int = 10, warmup: int = 2, overrides: list[str] | None = None) -> dict:
    """`config`: one file or the files to compose, in order (as `fit -c A -c B`)."""
    files = [config] if isinstance(config, str) else list(config)
    # no loggers: built from the config they would write W&B files into the run's folder, which no run uses
    cli = DawnCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  run=False, args=[*(a for f in files for a in ("-c", f)), *(overrides or []), "--trainer.logger=false"],
                  save_config_callback=None, auto_configure_optimizers=False)
    configured = cli.trainer
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator=configured.accelerator, devices=1, precision=configured.precision_plugin.precision,
                        max_steps=warmup + steps, logger=False, enable_checkpointing=False, callbacks=[timer],
                        limit_val_batches=0, enable_model_summary=False, enable_progress_bar=False,
                        accumulate_grad_batches=configured.accumulate_grad_batches)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    device = cli.model.device
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    params = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)
    return {
        "stage": type(cli.model).__name__, "config": config, "device": str(device), "trainable_params": params,
        "batch_size": timer.samples // max(timer.steps, 1), "timed_steps": timer.steps,
        "steps_per_s": round(timer.steps / timer.seconds, 3), "samples_per_s": round(timer.samples / timer.seconds, 2),
        "peak_memory_gb": round(peak, 3), "peak_memory_kind": "cuda allocated" if device.type == "cuda" else "process RSS",
    }
