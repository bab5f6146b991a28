"""Learning-rate schedules expressed in optimizer steps (never in "epochs of repeats"), and the optimizer kernel choice."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch


def fused_on_cpu(params: Iterable) -> Optional[bool]:
    """`fused=` for torch's Adam/AdamW: True when every parameter is on the CPU, where the fused kernel is the same
    update in one pass per tensor instead of ~8 (0.30 -> 0.10 s per step for the LFG's 66 M parameters at 1 thread);
    None (torch's default choice) elsewhere.  params: tensors or param-group dicts."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return True if tensors and all(t.device.type == "cpu" for t in tensors) else None


def total_optimizer_steps(trainer) -> int:
    """The run's optimizer steps: `trainer.max_steps` if set, else Lightning's estimate (which
    accounts for gradient accumulation and the number of devices)."""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    return int(trainer.estimated_stepping_batches)


def cosine_schedule(optimizer, trainer, lr: float, min_lr: float, warmup_steps: int = 0) -> dict:
    """Linear warm-up then cosine decay from `lr` to `min_lr`, stepped every optimizer step."""
    total = max(1, total_optimizer_steps(trainer))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step", "frequency": 1}
