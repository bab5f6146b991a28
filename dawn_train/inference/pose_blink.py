"""Driving pose and blink for generation: PBNet samples in dataset units (official inference,
dawn_official_spec.md 3.4, with an explicit seed), sequences from files, or the held reference state.

    sampler = PoseBlinkSampler.from_checkpoints("pose.ckpt", "blink.ckpt")
    pose, blink = sampler(audio_feat, init_pose, init_blink, seed=0)  # (T, 6), (T, 2)

The whole sequence is decoded in one non-autoregressive pass (one latent per frame, eval mode: no
dropout, +-`eval_window`-frame local attention with relative positions only).  Each model comes with
the units it was trained with (`models/pbnet/units.PBNetUnits`, read from the checkpoint's
hyper-parameters; official and converted files mean the official units and prior).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from dawn_train import checkpoints
from dawn_train.data.schema import BLINK_DIM, POSE_DIM
from dawn_train.log import get_logger
from dawn_train.models.pbnet import PBNet
from dawn_train.models.pbnet.units import PBNetUnits, prior_latent

log = get_logger(__name__)


@dataclass
class PoseBlink:
    """Driving pose/blink (raw units, see `data/schema.py`): pose (N, 6), blink (N, 2), and the
    reference frame's state ref_pose (6,), ref_blink (2,).  The model sees pose - ref_pose, blink - ref_blink."""

    pose: np.ndarray
    blink: np.ndarray
    ref_pose: np.ndarray
    ref_blink: np.ndarray


@dataclass
class GenerationRequest:
    """What a pose/blink source gets: the reference image (R, R, 3) uint8, the 16 kHz audio (L,), its
    per-frame features (N, D), the frame count N and the seed."""

    image: np.ndarray
    audio: np.ndarray
    audio_feat: np.ndarray
    n_frames: int
    seed: int


PoseBlinkSource = Callable[[GenerationRequest], PoseBlink]


def units_of(checkpoint: checkpoints.Checkpoint) -> PBNetUnits:
    """The units a PBNet checkpoint was trained with (official units for official/converted-official files)."""
    return PBNetUnits.of_hparams(checkpoint.hparams)


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
    `pose_units`/`blink_units`: the units and latent prior each model was trained with. `fact` scales z
    (official name).  Returns pose (T, 6) and blink (T, 2), float32 on the models' device, in dataset
    units; frame 0 is the init state plus the model's (small) predicted offset, as in the official pipeline.
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
        t = audio.shape[0]

        def latent(model: PBNet, units: PBNetUnits) -> Tensor:
            return fact * prior_latent(model, 1, t, units.prior_rho, generator=generator, device=device)

        x0 = pose_units.to_model(init_pose, "pose")[None, None]  # (1, 1, 6)
        pose = pose_model.generate(x0, pose_units.audio(audio)[None], z=latent(pose_model, pose_units))[0]  # (T, 6)
        pose = pose_units.to_data(pose, "pose")
        b0 = blink_units.to_model(init_blink, "blink")[None, None]
        blink = blink_model.generate(b0, blink_units.audio(audio)[None], z=latent(blink_model, blink_units))[0]
        blink = blink_units.to_data(blink, "blink")  # (T, 2)
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
    def from_checkpoints(cls, pose_ckpt: str | Path, blink_ckpt: str | Path, *, pose_units: Optional[PBNetUnits] = None,
                         blink_units: Optional[PBNetUnits] = None,
                         device: str | torch.device = "cpu") -> "PoseBlinkSampler":
        """Load both models from any supported checkpoint (see `checkpoints.open_checkpoint`); units from
        the files unless given."""
        pose = checkpoints.open_checkpoint(pose_ckpt, "pbnet-pose")
        blink = checkpoints.open_checkpoint(blink_ckpt, "pbnet-blink")
        return cls(pose.build().to(device), blink.build().to(device), pose_units=pose_units or units_of(pose),
                   blink_units=blink_units or units_of(blink))

    def to(self, device: str | torch.device) -> "PoseBlinkSampler":
        self.pose_model.to(device), self.blink_model.to(device)
        return self

    def __call__(self, audio_feat, init_pose, init_blink, seed: int = 0, fact: float = 1.0) -> tuple[Tensor, Tensor]:
        """audio_feat (T, A), init_pose (6,), init_blink (2,) -> pose (T, 6), blink (T, 2), dataset units."""
        return sample_pose_blink(self.pose_model, self.blink_model, audio_feat, init_pose, init_blink, seed,
                                 pose_units=self.pose_units, blink_units=self.blink_units, fact=fact)


# ---- sources for generation -------------------------------------------------------------------------
def read_sequence(path: str | Path, dim: int, n_frames: int, what: str) -> np.ndarray:
    """A (frames, dim) .npy sequence (a 7-column official pose loses tz), cut to `n_frames`."""
    array = np.load(path, allow_pickle=False).astype(np.float32)
    if what == "pose" and array.ndim == 2 and array.shape[1] == 7:
        log.info("%s: 7-column pose (official 3DDFA layout), dropping tz", path)
        array = array[:, :6]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{path}: {what} must have shape (frames, {dim}), got {array.shape}")
    if len(array) < n_frames:
        raise ValueError(f"{path}: {len(array)} {what} rows, the audio needs {n_frames} frames")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: {what} contains NaN or inf")
    return array[:n_frames]


def pose_blink_from_files(pose_from: Optional[str] = None, blink_from: Optional[str] = None, ref_pose=None,
                          ref_blink=None) -> PoseBlinkSource:
    """Pose/blink from .npy files ((N, 6) or official (N, 7); (N, 2)), absolute values of the driving video.

    The reference state is the source image's own (`ref_pose` (6,), `ref_blink` (2,)), as the official
    cross-identity driving does: the model sees driving - source.  Without one, a file's first row stands in
    (the same-identity case, where the source is that video's first frame).  What is not given as a file is
    held at the reference state (zero deltas)."""

    def source(request: GenerationRequest) -> PoseBlink:
        n = request.n_frames
        pose = read_sequence(pose_from, POSE_DIM, n, "pose") if pose_from else None
        blink = read_sequence(blink_from, BLINK_DIM, n, "blink") if blink_from else None
        rp = np.asarray(ref_pose, np.float32) if ref_pose is not None else (
            pose[0].copy() if pose is not None else np.zeros(POSE_DIM, np.float32))
        rb = np.asarray(ref_blink, np.float32) if ref_blink is not None else (
            blink[0].copy() if blink is not None else np.zeros(BLINK_DIM, np.float32))
        pose = pose if pose is not None else np.repeat(rp[None], n, 0)
        blink = blink if blink is not None else np.repeat(rb[None], n, 0)
        return PoseBlink(pose, blink, rp, rb)

    return source


def pose_blink_from_pbnet(sampler: PoseBlinkSampler, init_pose, init_blink, pose_from: Optional[str] = None,
                          blink_from: Optional[str] = None) -> PoseBlinkSource:
    """Pose/blink sampled by the PBNets from the audio features (seeded by the request), starting from the
    reference image's state `init_pose` (6,), `init_blink` (2,).  A part given as a file (`pose_from` /
    `blink_from`, e.g. another video's signals) is taken from the file instead."""
    init_pose, init_blink = np.asarray(init_pose, np.float32), np.asarray(init_blink, np.float32)
    files = pose_blink_from_files(pose_from, blink_from, init_pose, init_blink)

    def source(request: GenerationRequest) -> PoseBlink:
        pose, blink = sampler(request.audio_feat, init_pose, init_blink, seed=request.seed)
        pose, blink = pose.cpu().numpy(), blink.cpu().numpy()
        given = files(request)
        pose, ref_pose = (given.pose, given.ref_pose) if pose_from else (pose, init_pose)
        blink, ref_blink = (given.blink, given.ref_blink) if blink_from else (blink, init_blink)
        return PoseBlink(pose, blink, ref_pose, ref_blink)

    return source
