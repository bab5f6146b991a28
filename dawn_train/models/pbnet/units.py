"""How dataset units map to a PBNet's inputs and outputs, and its latent prior: one owner for the
training stage (`stages/pbnet.py`) and for sampling (`inference/pose_blink.py`).

Pose (6-d): min-max normalised with `pose_range` (see `stages/pbnet.py` for the presets), then x
`scale`; blink (2-d): raw ratio x `scale`.  Audio features enter as (feat - audio_mean) / audio_std.
The latent prior is N(0, I) per frame (`prior_rho` 0, official) or a stationary AR(1) process in time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .cvae import PBNet
from .normalization import POSE_MAX, POSE_MIN, denormalize_pose, normalize_pose


def pose_range(pose_norm: str = "crop", crop_size: float = 256.0, pose_min: Optional[tuple[float, ...]] = None,
               pose_max: Optional[tuple[float, ...]] = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (min, max) 6-tuples of the pose min-max normalisation.  `official`: the release ranges (3DDFA
    units); `crop`: official angles, scale in [0, 1], tx/ty in [0, crop_size] (our crop units);
    `pose_min`/`pose_max` override either preset."""
    if (pose_min is None) != (pose_max is None):
        raise ValueError("pose_min and pose_max must be given together")
    if pose_min is not None:
        if len(pose_min) != 6 or len(pose_max) != 6:
            raise ValueError(f"pose_min/pose_max need 6 values, got {len(pose_min)} and {len(pose_max)}")
        return tuple(float(v) for v in pose_min), tuple(float(v) for v in pose_max)
    if pose_norm == "official":
        return POSE_MIN, POSE_MAX
    if pose_norm == "crop":
        return (-90.0, -90.0, -90.0, 0.0, 0.0, 0.0), (90.0, 90.0, 90.0, 1.0, float(crop_size), float(crop_size))
    raise ValueError(f"pose_norm must be 'crop' or 'official', got {pose_norm!r}")


def prior_latent(model: PBNet, batch: int, frames: int, rho: float = 0.0, *, generator: Optional[torch.Generator] = None,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> Tensor:
    """(B, T, L) prior sample of a PBNet's per-frame latents.

    rho=0: the official prior, z ~ N(0, I) per frame (exactly `model.sample_latent`, so a seed gives
    the official z). 0 < rho < 1: the stationary AR(1) prior of `losses.kl_loss(rho=...)`, built from
    the same standard-normal draws e_t: z_0 = e_0, z_t = rho z_(t-1) + sqrt(1 - rho^2) e_t (unit
    variance per frame, correlation rho^k at lag k). Use the rho the model was trained with."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"prior_latent: rho must be in [0, 1), got {rho}")
    eps = model.sample_latent(batch, frames, generator=generator, device=device, dtype=dtype)
    if rho == 0.0:
        return eps
    z, c = torch.empty_like(eps), (1.0 - rho * rho) ** 0.5
    z[:, 0] = eps[:, 0]
    for t in range(1, frames):
        z[:, t] = rho * z[:, t - 1] + c * eps[:, t]
    return z


@dataclass(frozen=True)
class PBNetUnits:
    """Dataset units <-> a PBNet's units: pose min-max ranges (pose model only), then x `scale` (the
    stage's `target_scale`; pose and blink); audio = (audio_feat - audio_mean) / audio_std; `prior_rho`
    (0 = official prior)."""

    pose_min: tuple[float, ...] = POSE_MIN
    pose_max: tuple[float, ...] = POSE_MAX
    audio_mean: float = 0.0
    audio_std: float = 1.0
    scale: float = 1.0
    prior_rho: float = 0.0

    def audio(self, audio_feat: Tensor) -> Tensor:
        """(..., A) features -> model input."""
        return (audio_feat - self.audio_mean) / self.audio_std

    def to_model(self, x: Tensor, target: str) -> Tensor:
        """(..., D) dataset units -> model units (`target` "pose" or "blink")."""
        x = normalize_pose(x, self.pose_min, self.pose_max) if target == "pose" else x
        return x * self.scale if self.scale != 1 else x

    def to_data(self, x: Tensor, target: str) -> Tensor:
        """Inverse of :meth:`to_model`."""
        x = x / self.scale if self.scale != 1 else x
        return denormalize_pose(x, self.pose_min, self.pose_max) if target == "pose" else x

    @classmethod
    def of_hparams(cls, hp) -> "PBNetUnits":
        """From `PBNetStage` hyper-parameters (any mapping); the official units if it has no `pose_norm`
        (official and converted files)."""
        if "pose_norm" not in hp:
            return cls()
        lo, hi = pose_range(hp["pose_norm"], hp.get("crop_size", 256.0), hp.get("pose_min"), hp.get("pose_max"))
        return cls(lo, hi, float(hp.get("audio_mean", 0.0)), float(hp.get("audio_std", 1.0)),
                   float(hp.get("target_scale", 1.0)), float(hp.get("prior_rho", 0.0)))
