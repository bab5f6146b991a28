"""Exponential moving average of a model's weights, kept on the LightningModule.

The official DAWN trainers keep no EMA; we add one because diffusion samples from averaged weights
are markedly cleaner.  The average lives in a frozen copy of the model (``EMA.model``), registered as
a sub-module of the stage, so it moves with ``.to()``, is saved in every Lightning checkpoint
(``ema.model.*``) and is restored on resume; it never reaches the optimizer.  Every rank updates its
own copy from identical (all-reduced) weights under DDP, so the copies stay equal without
communication.  Not for DeepSpeed ZeRO-3 (sharded parameters): use stage 2 or no EMA there.

Update after optimizer step ``n`` (1-based): ``decay_n = min(decay, (1 + n) / (10 + n))`` when
``warmup`` is on (the usual warm-up, so early averages are not dominated by the random
initialisation), then ``ema <- decay_n * ema + (1 - decay_n) * weights`` for floating-point
parameters and buffers; other buffers are copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """EMA copy of ``model``.  ``step`` (a buffer, so it is checkpointed) counts the updates made."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def current_decay(self, step: int) -> float:
        """The decay used for update number ``step`` (1-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights (same architecture)."""
        self.step += 1
        decay = self.current_decay(int(self.step))
        # named_* lists a tensor shared by several modules once (a state dict repeats it per key)
        source = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name, target in [*self.model.named_parameters(), *self.model.named_buffers()]:
            value = source[name].detach()
            if target.dtype.is_floating_point:
                target.lerp_(value.to(target.dtype), 1.0 - decay)
            else:
                target.copy_(value)

    def train(self, mode: bool = True) -> "EMA":
        # The average is only ever evaluated: keep it in eval mode whatever the parent does.
        super().train(mode)
        self.model.eval()
        return self
