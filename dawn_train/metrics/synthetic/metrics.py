"""Ground-truth quality metrics for the synthetic domain, measured on generated frames only.

Protocol (DAWN's): the source is the clip's first frame, the audio is the clip's own, and the pose
/ blink signals that drive generation are the ground truth's or PBNet's. The generated frames are
then read by the synthetic probe (`probe.py`) and compared with the truth; the driving signals are
never scored in place of the frames.

- PSNR, SSIM (higher is better): each frame vs the real frame, both rounded to 8-bit levels, mean
  over frames. SSIM: Gaussian window 11 x 11, sigma 1.5 (torchmetrics). PSNR is capped at 100 dB.
- MouthCorr (higher): Pearson correlation of the probe's mouth opening on the generated frames with
  the true opening, per video, mean over videos.
- SyncOffset (0 is best): the shift k in [-5, 5] frames maximising corr(generated[t], truth[t - k]);
  positive when the generated mouth lags. Mean over videos.
- SyncConf (higher): the peak correlation over the shifts minus their median, an LSE-C analogue.
- Blink/s (near the truth): `blink.BlinkRate` on the probe's eye openness.
- PoseErr (lower): mean absolute yaw / pitch / roll error (degrees) of the probe's pose on the
  generated frames vs the driving pose.
- IdErr (lower): mean absolute difference of the probe's identity parameters (face aspect, skin,
  hair and background colours) between each generated frame and the source image.

A series without variance (a still mouth) has correlation 0 at every shift.
All states are sums (`dist_reduce_fx="sum"`), so DDP ranks combine exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from dawn_train.metrics.frechet import quantize_8bit
from dawn_train.metrics.weights import Float64Metric

PSNR_CAP = 100.0  # dB; identical frames would give +inf


def _lengths(lengths: Tensor | None, batch: int, frames: int) -> list[int]:
    return [frames] * batch if lengths is None else [int(n) for n in lengths]


def _check_videos(name: str, x: Tensor) -> None:
    if x.ndim != 5 or x.shape[2] != 3:
        raise ValueError(f"{name}: expected videos (B, T, 3, H, W), got {tuple(x.shape)}")


def frame_psnr(video: Tensor, truth: Tensor, cap: float = PSNR_CAP) -> Tensor:
    """(T, 3, H, W) RGB in [0, 1] each -> (T,) PSNR in dB (float64) of the frames rounded to 8-bit levels, capped
    at `cap` (identical frames would give +inf): `FrameFidelity`'s PSNR per frame."""
    return _psnr_8bit(quantize_8bit(video.float()), quantize_8bit(truth.float()), cap)


def _psnr_8bit(x: Tensor, y: Tensor, cap: float) -> Tensor:
    mse = (x - y).pow(2).flatten(1).mean(1).double()
    return (10 * torch.log10(1 / mse.clamp(min=10 ** (-cap / 10)))).clamp(max=cap)


class FrameFidelity(Float64Metric):
    """PSNR and SSIM of video frames against the real frames.

    update(videos, real, lengths=None): (B, T, 3, H, W) RGB in [0, 1], rounded to 8-bit levels
    first; lengths (B,) valid frames. compute(): {"PSNR": dB, "SSIM": in [-1, 1]}, means over frames."""

    higher_is_better = True

    def __init__(self, *, psnr_cap: float = PSNR_CAP, **kwargs):
        super().__init__(**kwargs)
        self.psnr_cap = psnr_cap
        self.add_state("psnr_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ssim_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, videos: Tensor, real: Tensor, lengths: Tensor | None = None) -> None:
        _check_videos("videos", videos)
        if videos.shape != real.shape:
            raise ValueError(f"videos {tuple(videos.shape)} and real {tuple(real.shape)} differ in shape")
        for video, truth, n in zip(videos, real, _lengths(lengths, *videos.shape[:2])):
            x, y = quantize_8bit(video[:n].float()), quantize_8bit(truth[:n].float())
            psnr = _psnr_8bit(x, y, self.psnr_cap)
            ssim = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
            self.psnr_sum += psnr.sum().to(self.psnr_sum.device)
            self.ssim_sum += ssim.double().sum().to(self.ssim_sum.device)
            self.frames += n

    def compute(self) -> dict[str, Tensor]:
        n = self.frames.clamp(min=1).double()
        return {"PSNR": self.psnr_sum / n, "SSIM": self.ssim_sum / n}


def pearson(x: np.ndarray, y: np.ndarray, eps: float = 1e-9) -> float:
    """Pearson correlation of two series; 0 when either has no variance."""
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / norm) if norm > eps else 0.0


def shifted_correlations(signal: np.ndarray, reference: np.ndarray, max_offset: int) -> np.ndarray:
    """(2 max_offset + 1,) corr(signal[t], reference[t - k]) for k = -max_offset .. max_offset."""
    n = len(signal)
    out = []
    for k in range(-max_offset, max_offset + 1):
        if k >= 0:
            out.append(pearson(signal[k:], reference[:n - k]))
        else:
            out.append(pearson(signal[:n + k], reference[-k:]))
    return np.array(out)


class MouthSync(Float64Metric):
    """Lip sync on mouth-opening series: correlation, best offset, confidence.

    Args: max_offset (5 frames): the offset search range.
    update(mouth, reference, lengths=None): (B, T) mouth opening read from the video and the true
    opening. Videos shorter than 2 max_offset + 3 frames are skipped (counted in `n_skipped`).
    compute(): {"MouthCorr", "SyncOffset", "SyncConf"}, means over videos; NaN when every video was too short
    (no lip sync was measured, which is not a correlation of 0)."""

    higher_is_better = True

    def __init__(self, *, max_offset: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.max_offset = max_offset
        for name in ("corr", "offset", "conf"):
            self.add_state(f"{name}_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_skipped", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, mouth: Tensor, reference: Tensor, lengths: Tensor | None = None) -> None:
        if mouth.ndim != 2 or mouth.shape != reference.shape:
            raise ValueError(f"expected mouth and reference (B, T), got {tuple(mouth.shape)} and "
                             f"{tuple(reference.shape)}")
        series, refs = mouth.double().cpu().numpy(), reference.double().cpu().numpy()
        for signal, ref, n in zip(series, refs, _lengths(lengths, *mouth.shape)):
            if n < 2 * self.max_offset + 3:
                self.n_skipped += 1
                continue
            corrs = shifted_correlations(signal[:n], ref[:n], self.max_offset)
            ties = np.flatnonzero(corrs == corrs.max())  # e.g. a still mouth: 0 everywhere -> offset 0
            best = int(ties[np.argmin(np.abs(ties - self.max_offset))])
            self.corr_sum += corrs[self.max_offset]
            self.offset_sum += best - self.max_offset
            self.conf_sum += corrs[best] - np.median(corrs)
            self.n += 1

    def compute(self) -> dict[str, Tensor]:
        n = self.n.double() if self.n > 0 else torch.full_like(self.corr_sum, float("nan"))
        return {"MouthCorr": self.corr_sum / n, "SyncOffset": self.offset_sum / n, "SyncConf": self.conf_sum / n}


class PoseError(Float64Metric):
    """Head-pose angle error.

    update(pose, target, lengths=None): (B, T, 6) pose read from the frames and the driving pose
    (yaw, pitch, roll in degrees first). compute(): (3,) mean absolute yaw, pitch, roll error (deg)."""

    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("abs_sum", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pose: Tensor, target: Tensor, lengths: Tensor | None = None) -> None:
        if pose.ndim != 3 or pose.shape[-1] < 3 or pose.shape[:2] != target.shape[:2]:
            raise ValueError(f"expected pose and target (B, T, 6), got {tuple(pose.shape)} and {tuple(target.shape)}")
        for read, truth, n in zip(pose, target, _lengths(lengths, *pose.shape[:2])):
            err = (read[:n, :3].double() - truth[:n, :3].double().to(read.device)).abs()
            self.abs_sum += err.sum(0).to(self.abs_sum.device)
            self.frames += n

    def compute(self) -> Tensor:
        return self.abs_sum / self.frames.clamp(min=1).double()


class HeadMotion(Float64Metric):
    """How much the head moves: the temporal std of the yaw, pitch and roll read from the frames, per clip,
    averaged over the three angles and the clips (deg).  Natural motion (PBNet-driven videos) is judged by
    this against the real clips' value: a frozen head scores ~0, jitter scores high.

    update(pose, lengths=None): (B, T, 6), angles in degrees first.  compute(): scalar."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("std_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pose: Tensor, lengths: Tensor | None = None) -> None:
        if pose.ndim != 3 or pose.shape[-1] < 3:
            raise ValueError(f"expected pose (B, T, 6), got {tuple(pose.shape)}")
        for read, n in zip(pose, _lengths(lengths, *pose.shape[:2])):
            if n > 1:
                self.std_sum += read[:n, :3].double().std(dim=0).mean().to(self.std_sum.device)
                self.clips += 1

    def compute(self) -> Tensor:
        return self.std_sum / self.clips.clamp(min=1).double()


class IdentityError(Float64Metric):
    """Identity drift: mean absolute difference of identity parameters between frames and the source.

    update(identity, source, lengths=None): (B, T, D) per frame and (B, D) of the source.
    compute(): scalar, mean over frames and parameters."""

    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("abs_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("values", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, identity: Tensor, source: Tensor, lengths: Tensor | None = None) -> None:
        if identity.ndim != 3 or source.shape != (identity.shape[0], identity.shape[2]):
            raise ValueError(f"expected identity (B, T, D) and source (B, D), got {tuple(identity.shape)} "
                             f"and {tuple(source.shape)}")
        for read, ref, n in zip(identity, source, _lengths(lengths, *identity.shape[:2])):
            err = (read[:n].double() - ref.double()[None]).abs()
            self.abs_sum += err.sum().to(self.abs_sum.device)
            self.values += err.numel()

    def compute(self) -> Tensor:
        return self.abs_sum / self.values.clamp(min=1).double()


def frames_of(videos: Tensor) -> Tensor:
    """(B, T, 3, H, W) -> (B T, 3, H, W)."""
    return rearrange(videos, "b t c h w -> (b t) c h w")
