"""Blink/s: blinks per second detected on an eye-openness sequence.

Openness is DAWN's blink signal (`blink.npy`): per eye, one vertical lid distance over the eye
width (official `calculate_eye`; extracted from frames by `dawn_train.data.prep.landmarks`). The
two eyes are averaged. A blink is a run of at least `min_frames` consecutive frames whose
openness is below the threshold:
- `threshold=None` (default): `relative_threshold` x the video's median openness (0.6 x median;
  relative, because the ratio's open-eye level differs between people and crops);
- `threshold=<float>`: an absolute ratio, for comparing against a fixed rule.
`min_frames=2` (80 ms at 25 fps) drops one-frame landmark glitches; human blinks last 100-400 ms.
Blinks that begin before frame 0 or run past the last frame still count once.
The metric pools all videos: total blinks / total seconds (closer to ground truth is better).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dawn_train.data.schema import BLINK_RELATIVE, FPS
from dawn_train.metrics.weights import Float64Metric


def count_blinks(openness: np.ndarray, *, threshold: float | None = None, relative_threshold: float = BLINK_RELATIVE,
                 min_frames: int = 2) -> int:
    """(T,) or (T, 2) openness -> number of closed runs of >= min_frames frames. NaN frames are open."""
    x = np.asarray(openness, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(1)
    valid = np.isfinite(x)
    if not valid.any():
        return 0
    thr = threshold if threshold is not None else relative_threshold * np.median(x[valid])
    closed = np.concatenate([[False], valid & (x < thr), [False]]).astype(np.int8)
    edges = np.diff(closed)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(np.sum(ends - starts >= min_frames))


class BlinkRate(Float64Metric):
    """Blinks per second.

    Args: threshold, relative_threshold, min_frames (see module docstring); fps of the sequences (25).

    update(openness): (B, T) or (B, T, 2) eye-openness ratios (>= 0, ~0.2-0.4 open, ~0 closed),
    NaN where no face was found; optional `lengths` (B,) valid frames per video.
    compute(): scalar float64 tensor, blinks / second over all videos.
    """

    higher_is_better = None

    def __init__(self, *, threshold: float | None = None, relative_threshold: float = BLINK_RELATIVE, min_frames: int = 2,
                 fps: float = FPS, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.relative_threshold = threshold, relative_threshold
        self.min_frames, self.fps = min_frames, fps
        self.add_state("blinks", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("frames", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, openness: Tensor, lengths: Tensor | None = None) -> None:
        if openness.ndim not in (2, 3):
            raise ValueError(f"expected openness (B, T) or (B, T, 2), got {tuple(openness.shape)}")
        seqs = openness.double().cpu().numpy()
        for i, seq in enumerate(seqs):
            n = int(lengths[i]) if lengths is not None else seq.shape[0]
            self.blinks += count_blinks(seq[:n], threshold=self.threshold,
                                        relative_threshold=self.relative_threshold, min_frames=self.min_frames)
            self.frames += n

    def compute(self) -> Tensor:
        seconds = self.frames.double() / self.fps
        return self.blinks.double() / seconds.clamp(min=1e-9)
