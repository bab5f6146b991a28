"""Which way is better for each logged metric: one table for the W&B summaries (`define_metric`) and the
report's best marks.  "min": lower is better; "max": higher is better; "target": closest to the ground
truth's value is best (paper Table 1: BAS, Blink/s); None: no direction (counters, settings, rates)."""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence

# by the last part of the key (`val/synth/PSNR` -> PSNR); paper Table 1 and the synthetic probe's table
BY_NAME = {
    "FID": "min", "FVD16": "min", "FVD32": "min", "LSE-C": "max", "LSE-D": "min", "CSIM": "max",
    "BAS": "target", "Blink/s": "target",
    "PSNR": "max", "SSIM": "max", "MouthCorr": "max", "SyncConf": "max", "SyncOffset": "target",
    "PoseErr": "min", "IdErr": "min",
}
# name parts that mean an error to minimise (losses, reconstruction errors): whole parts of the key split on "/",
# "_" and "-" (`val/loss_mouth`, `train/l1-pyramid`), never a fragment of a word (`rc` is not in `val/src_frac`)
LOWER_IS_BETTER = ("loss", "l1", "l2", "rc", "mse", "mae", "err", "error", "kl")
# prefixes of what is not a quality figure (throughput, data health, schedules)
NO_DIRECTION = ("perf/", "data/", "lr", "trainer/", "epoch", "effective_batch_size", "world_size", "train/clip_len")


def metric_direction(key: str) -> Optional[str]:
    """"min", "max", "target" or None for a logged key such as `val/loss`, `eval/FVD16`, `val/synth/PSNR`."""
    if key.startswith(NO_DIRECTION):
        return None
    for name, direction in BY_NAME.items():  # names may hold a slash themselves (Blink/s)
        if key == name or key.endswith("/" + name):
            return direction
    parts = re.split(r"[/_-]", key.lower())
    if any(part in LOWER_IS_BETTER for part in parts):
        return "min"
    return None


def wandb_summary(key: str) -> str:
    """The W&B `define_metric(summary=...)` of a key: its best and its last value, or only the last."""
    direction = metric_direction(key)
    return f"{direction},last" if direction in ("min", "max") else "last"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def best_index(values: Sequence[Optional[float]], direction: Optional[str], target: Optional[float] = None) -> list[int]:
    """Indices of the best values (ties all count); [] without a direction or with fewer than two numbers."""
    numbers = [(i, float(v)) for i, v in enumerate(values) if is_number(v)]
    if direction is None or len(numbers) < 2 or (direction == "target" and target is None):
        return []
    if direction == "target":
        score = [(i, abs(v - target)) for i, v in numbers]
        best = min(s for _, s in score)
        return [i for i, s in score if s == best]
    best = (min if direction == "min" else max)(v for _, v in numbers)
    return [i for i, v in numbers if v == best]


def best_of(points: Sequence[tuple[int, float]], direction: Optional[str]) -> Optional[tuple[int, float]]:
    """The (step, value) with the best value of a history by direction; the last one without a direction."""
    if not points:
        return None
    if direction == "min":
        return min(points, key=lambda p: p[1])
    if direction == "max":
        return max(points, key=lambda p: p[1])
    return points[-1]
