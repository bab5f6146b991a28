"""Small helpers shared by the stage modules."""
from __future__ import annotations

import inspect

import lightning as L
from torch import nn


def save_hyperparameters(module: L.LightningModule) -> None:
    """`save_hyperparameters()` of the caller's __init__ arguments.

    Under LightningCLI injected sub-modules are recorded as their YAML ({class_path, init_args}),
    so a checkpoint can rebuild itself.  Built from Python, an nn.Module argument is replaced by its
    class path (weights live in the state dict; a pickled module would not load with weights_only)."""
    frame = inspect.currentframe().f_back
    module.save_hyperparameters(frame=frame)
    for key, value in list(module.hparams.items()):
        if isinstance(value, nn.Module):
            module.hparams[key] = {"class_path": f"{type(value).__module__}.{type(value).__qualname__}"}
