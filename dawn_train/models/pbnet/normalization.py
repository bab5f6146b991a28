"""Min-max normalisation of the 6-d head pose, as the official pipeline applies it outside PBNet.

Pose layout (3DDFA): yaw, pitch, roll in degrees, then scale, tx, ty. The official ranges map
angles from [-90, 90] and scale/translations from [0, 1] / [0, 720] / [0, 1080] to [0, 1]. These
ranges leave scale (~5e-4) and the translations (~50-120) nearly constant after normalisation; they
are kept as defaults because the released pose model was trained on them. Blink ratios are not
normalised.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

POSE_MIN: tuple[float, ...] = (-90.0, -90.0, -90.0, 0.0, 0.0, 0.0)
POSE_MAX: tuple[float, ...] = (90.0, 90.0, 90.0, 1.0, 720.0, 1080.0)


def _range(ref: Tensor, lo, hi) -> tuple[Tensor, Tensor]:
    lo = torch.as_tensor(lo, device=ref.device, dtype=ref.dtype)
    hi = torch.as_tensor(hi, device=ref.device, dtype=ref.dtype)
    return lo, hi


def normalize_pose(pose: Tensor, lo=POSE_MIN, hi=POSE_MAX) -> Tensor:
    """pose: (..., 6) raw -> (..., 6) ``(pose - lo) / (hi - lo)``."""
    lo, hi = _range(pose, lo, hi)
    return (pose - lo) / (hi - lo)


def denormalize_pose(pose: Tensor, lo=POSE_MIN, hi=POSE_MAX) -> Tensor:
    """Inverse of ``normalize_pose``: (..., 6) ``pose * (hi - lo) + lo`` (official ``inv_transform``)."""
    lo, hi = _range(pose, lo, hi)
    return pose * (hi - lo) + lo


class PoseNormalizer(nn.Module):
    """The same as a module with the ranges as (non-persistent) buffers, so ``.to()`` moves them and
    model checkpoints stay identical to the official ones."""

    def __init__(self, pose_min: tuple[float, ...] = POSE_MIN, pose_max: tuple[float, ...] = POSE_MAX) -> None:
        super().__init__()
        if len(pose_min) != len(pose_max) or any(hi <= lo for lo, hi in zip(pose_min, pose_max)):
            raise ValueError(f"need pose_min < pose_max elementwise, got {pose_min} and {pose_max}")
        self.register_buffer("pose_min", torch.tensor(pose_min), persistent=False)
        self.register_buffer("pose_max", torch.tensor(pose_max), persistent=False)

    def forward(self, pose: Tensor) -> Tensor:
        """(..., 6) raw -> normalised."""
        return normalize_pose(pose, self.pose_min, self.pose_max)

    def inverse(self, pose: Tensor) -> Tensor:
        """(..., 6) normalised -> raw."""
        return denormalize_pose(pose, self.pose_min, self.pose_max)
