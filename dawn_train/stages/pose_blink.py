"""Pose and blink sequences for generation: PBNet sampling in dataset units (official inference,
dawn_official_spec.md 3.4, with an explicit seed).

    sampler = PoseBlinkSampler.from_checkpoints("pose.ckpt", "blink.ckpt")
    pose, blink = sampler(audio_feat, init_pose, init_blink, seed=0)  # (T, 6), (T, 2)

The whole sequence is decoded in one non-autoregressive pass (one latent per frame, eval mode:
no dropout, +-`eval_window`-frame local attention with relative positions only), so any length up
to the model's `max_len` comes out without seams or drift. Each model comes with the input units it
was trained with (`PBNetUnits`): the pose min-max ranges (pose is normalised in, de-normalised out;
blink is raw), the `target_scale` applied after that, the audio-feature scaling, and the latent prior
(`prior_rho`: 0 = official z ~ N(0, I) independently per frame; > 0 = the AR(1)-in-time prior the
model was trained against, see `prior_latent`). A Lightning .ckpt of `PBNetStage` records them;
official and converted files mean the official ranges, scale 1, unscaled (HuBERT) audio and the
official prior unless given explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dawn_train import checkpoints
from dawn_train.models.pbnet import POSE_MAX, POSE_MIN, PBNet, denormalize_pose, normalize_pose


def prior_latent(model: PBNet, batch: int, frames: int, rho: float = 0.0, *, generator: torch.Generator | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
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
    """How dataset units map to a PBNet's inputs and outputs, and its latent prior: pose min-max
    ranges (pose model only), then x `scale` (the stage's `target_scale`; pose and blink);
    audio = (audio_feat - audio_mean) / audio_std; `prior_rho` (the stage's; 0 = official prior)."""

    pose_min: tuple[float, ...] = POSE_MIN
    pose_max: tuple[float, ...] = POSE_MAX
    audio_mean: float = 0.0
    audio_std: float = 1.0
    scale: float = 1.0
    prior_rho: float = 0.0

    def audio(self, audio_feat: Tensor) -> Tensor:
        return (audio_feat - self.audio_mean) / self.audio_std

    @classmethod
    def of_checkpoint(cls, path: str | Path, kind: str) -> "PBNetUnits":
        """From the hyper-parameters of a `PBNetStage` Lightning .ckpt (checking its target against
        `kind`), else the official units (official and converted files)."""
        raw = checkpoints.read(path)
        hp = raw.get("hyper_parameters", {}) if "pytorch-lightning_version" in raw else {}
        if "target" in hp and f"pbnet-{hp['target']}" != kind:
            raise checkpoints.CheckpointError(f"{path}: trained with target '{hp['target']}', expected '{kind}'")
        return cls.of_hparams(hp)

    @classmethod
    def of_hparams(cls, hp) -> "PBNetUnits":
        """From `PBNetStage` hyper-parameters (a mapping, e.g. `stage.hparams`); official units if it
        has no `pose_norm`."""
        from dawn_train.stages.pbnet import pose_range

        if "pose_norm" not in hp:
            return cls()
        lo, hi = pose_range(hp["pose_norm"], hp.get("crop_size", 256.0), hp.get("pose_min"), hp.get("pose_max"))
        return cls(lo, hi, float(hp.get("audio_mean", 0.0)), float(hp.get("audio_std", 1.0)),
                   float(hp.get("target_scale", 1.0)), float(hp.get("prior_rho", 0.0)))


def _as_tensor(x, device: torch.device) -> Tensor:
    return torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x), dtype=torch.float32, device=device)


@torch.no_grad()
def sample_pose_blink(pose_model: PBNet, blink_model: PBNet, audio_feat, init_pose, init_blink, seed: int = 0, *,
                      pose_units: PBNetUnits = PBNetUnits(), blink_units: PBNetUnits = PBNetUnits(),
                      fact: float = 1.0) -> tuple[Tensor, Tensor]:
    """Sample head pose and eye openness for `audio_feat`.

    audio_feat: (T, A) per-frame audio features (the models' `audio_dim`); init_pose: (6,) and
    init_blink: (2,) of the source portrait in dataset units (arrays or tensors). One generator seeded
    with `seed` draws the pose latents, then the blink latents, so a seed always gives the same pair.
    `pose_units`/`blink_units`: the units and latent prior each model was trained with (official
    files: N(0, I) per frame, as the official pipeline). `fact` scales z (official name).
    Returns pose (T, 6) and blink (T, 2), float32 on the models' device, in dataset units; frame 0 is
    the init state plus the model's (small) predicted offset, as in the official pipeline.
    """
    if (pose_model.pos_dim, pose_model.eye_dim) != (6, 0) or (blink_model.pos_dim, blink_model.eye_dim) != (0, 2):
        raise ValueError("sample_pose_blink needs a pose PBNet (pos_dim=6, eye_dim=0) and a blink PBNet "
                         f"(pos_dim=0, eye_dim=2), got ({pose_model.pos_dim}, {pose_model.eye_dim}) and "
                         f"({blink_model.pos_dim}, {blink_model.eye_dim})")
    device = next(pose_model.parameters()).device
    if next(blink_model.parameters()).device != device:
        raise ValueError("sample_pose_blink: put the pose and blink models on the same device")
    audio = _as_tensor(audio_feat, device)
    init_pose, init_blink = _as_tensor(init_pose, device), _as_tensor(init_blink, device)
    if audio.ndim != 2 or init_pose.shape != (6,) or init_blink.shape != (2,):
        raise ValueError(f"expected audio_feat (T, A), init_pose (6,), init_blink (2,); got {tuple(audio.shape)}, "
                         f"{tuple(init_pose.shape)}, {tuple(init_blink.shape)}")
    modes = pose_model.training, blink_model.training
    pose_model.eval(), blink_model.eval()  # official inference: no dropout, local attention window
    try:
        generator = torch.Generator(device=device).manual_seed(int(seed))
        lo, hi = pose_units.pose_min, pose_units.pose_max
        t = audio.shape[0]

        def latent(model: PBNet, units: PBNetUnits) -> Tensor:
            return fact * prior_latent(model, 1, t, units.prior_rho, generator=generator, device=device)

        x0 = normalize_pose(init_pose, lo, hi)[None, None] * pose_units.scale  # (1, 1, 6)
        pose = pose_model.generate(x0, pose_units.audio(audio)[None], z=latent(pose_model, pose_units))[0]  # (T, 6)
        pose = denormalize_pose(pose / pose_units.scale, lo, hi)
        b0 = init_blink[None, None] * blink_units.scale
        blink = blink_model.generate(b0, blink_units.audio(audio)[None], z=latent(blink_model, blink_units))[0]
        blink = blink / blink_units.scale  # (T, 2)
    finally:
        pose_model.train(modes[0]), blink_model.train(modes[1])
    return pose, blink


class PoseBlinkSampler:
    """The two PBNets with their units; call it like `sample_pose_blink` without the models."""

    def __init__(self, pose_model: PBNet, blink_model: PBNet, *, pose_units: PBNetUnits = PBNetUnits(),
                 blink_units: PBNetUnits = PBNetUnits()) -> None:
        self.pose_model, self.blink_model = pose_model.eval(), blink_model.eval()
        self.pose_units, self.blink_units = pose_units, blink_units

    @classmethod
    def from_checkpoints(cls, pose_ckpt: str | Path, blink_ckpt: str | Path, *, pose_units: PBNetUnits | None = None,
                         blink_units: PBNetUnits | None = None,
                         device: str | torch.device = "cpu") -> "PoseBlinkSampler":
        """Load both models from any supported file (Lightning .ckpt of `PBNetStage`, converted file or
        official raw state dict; see `checkpoints.load_model`); units from the files unless given."""
        pose_units = pose_units or PBNetUnits.of_checkpoint(pose_ckpt, "pbnet-pose")
        blink_units = blink_units or PBNetUnits.of_checkpoint(blink_ckpt, "pbnet-blink")
        pose_model = checkpoints.load_model(pose_ckpt, "pbnet-pose").to(device)
        blink_model = checkpoints.load_model(blink_ckpt, "pbnet-blink").to(device)
        return cls(pose_model, blink_model, pose_units=pose_units, blink_units=blink_units)

    def to(self, device: str | torch.device) -> "PoseBlinkSampler":
        self.pose_model.to(device), self.blink_model.to(device)
        return self

    def __call__(self, audio_feat, init_pose, init_blink, seed: int = 0, fact: float = 1.0) -> tuple[Tensor, Tensor]:
        """audio_feat (T, A), init_pose (6,), init_blink (2,) -> pose (T, 6), blink (T, 2), dataset units."""
        return sample_pose_blink(self.pose_model, self.blink_model, audio_feat, init_pose, init_blink, seed,
                                 pose_units=self.pose_units, blink_units=self.blink_units, fact=fact)
