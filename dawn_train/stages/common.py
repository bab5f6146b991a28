"""Small helpers shared by the stage modules."""
from __future__ import annotations

import inspect

import lightning as L
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
