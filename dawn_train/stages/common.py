"""What the stage modules share: hyper-parameter recording and per-rank random streams."""
from __future__ import annotations

import inspect
import os
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn


def save_hyperparameters(module: L.LightningModule) -> None:
    """`save_hyperparameters()` of the caller's __init__ arguments.

    Under LightningCLI injected sub-modules are recorded as their YAML ({class_path, init_args}),
    so a checkpoint can rebuild itself.  Built from Python, an nn.Module argument is recorded by its
    class path only (its weights live in the state dict; a pickled module would not load with
    weights_only)."""
    frame = inspect.currentframe().f_back
    if _given_hyperparameters.get() is not None:  # LightningCLI: YAML of every argument
        module.save_hyperparameters()
        return
    modules = {k: v for k, v in frame.f_locals.items() if isinstance(v, nn.Module) and k != "self"}
    module.save_hyperparameters(ignore=list(modules), frame=frame)
    for key, value in modules.items():
        module.hparams[key] = {"class_path": f"{type(value).__module__}.{type(value).__qualname__}"}


def rank_seed(base: int, rank: int, step: int) -> int:
    """A 32-bit seed for (base seed, global rank, optimizer step at the start of training): distinct for
    every rank and for every resume point, the same for the same triple."""
    return int(np.random.SeedSequence([base % 2**32, rank, step]).generate_state(1)[0])


def seed_this_rank(module: L.LightningModule) -> int:
    """Reseed torch, numpy and random for this rank when training starts (after a resume restored the step).

    `seed_everything` gives every process the same seed, so without this every rank of a DDP/DeepSpeed
    job draws the same diffusion timesteps, noise, null-condition masks, flips and colour jitter: N copies
    of one draw on different clips instead of a global batch of independent draws.  The models are built
    before this (under the common seed), so their initial weights stay identical across ranks.  The run
    stays reproducible for a given seed and world size.  Returns the seed used."""
    trainer = module.trainer
    base = int(os.environ.get("PL_GLOBAL_SEED", 0))
    seed = rank_seed(base, trainer.global_rank, trainer.global_step)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all devices
    return seed


class DawnStage(L.LightningModule):
    """What every dawn_train stage shares: its own random stream per rank (`seed_this_rank`)."""

    def on_train_start(self) -> None:
        self.rank_seed = seed_this_rank(self)
