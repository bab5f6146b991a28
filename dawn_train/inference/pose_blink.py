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
def sample_pose_blink(pose_model: Optional[PBNet], blink_model: Optional[PBNet], audio_feat, init_pose, init_blink,
                      seed: int = 0, *, pose_units: PBNetUnits = PBNetUnits(), blink_units: PBNetUnits = PBNetUnits(),
                      fact: float = 1.0) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Sample head pose and eye openness for `audio_feat`.

    audio_feat: (T, A) per-frame audio features (the models' `audio_dim`); init_pose: (6,) and
    init_blink: (2,) of the source portrait in dataset units (arrays or tensors). One generator seeded
    with `seed` draws the pose latents, then the blink latents, so a seed always gives the same pair.
    `pose_units`/`blink_units`: the units and latent prior each model was trained with. `fact` scales z
    (official name).  Returns pose (T, 6) and blink (T, 2), float32 on the models' device, in dataset
    units; frame 0 is the init state plus the model's (small) predicted offset, as in the official pipeline.
    Either model may be None (the other part then comes from elsewhere: a file, the ground truth, the held state):
    its part of the result is None.
    """
    models = [m for m in (pose_model, blink_model) if m is not None]
    if not models:
        raise ValueError("sample_pose_blink needs a pose PBNet, a blink PBNet or both")
    for model, dims, kind in ((pose_model, (6, 0), "pose"), (blink_model, (0, 2), "blink")):
        if model is not None and (model.pos_dim, model.eye_dim) != dims:
            raise ValueError(f"sample_pose_blink: the {kind} PBNet must have (pos_dim, eye_dim) = {dims}, got "
                             f"({model.pos_dim}, {model.eye_dim}): a {'blink' if kind == 'pose' else 'pose'} model?")
    device = next(models[0].parameters()).device
    if any(next(m.parameters()).device != device for m in models):
        raise ValueError("sample_pose_blink: put the pose and blink models on the same device")
    audio = _as_tensor(audio_feat, device)
    init_pose, init_blink = _as_tensor(init_pose, device), _as_tensor(init_blink, device)
    if audio.ndim != 2 or init_pose.shape != (6,) or init_blink.shape != (2,):
        raise ValueError(f"expected audio_feat (T, A), init_pose (6,), init_blink (2,); got {tuple(audio.shape)}, "
                         f"{tuple(init_pose.shape)}, {tuple(init_blink.shape)}")
    modes = [m.training for m in models]
    for model in models:
        model.eval()  # official inference: no dropout, local attention window
    try:
        generator = torch.Generator(device=device).manual_seed(int(seed))
        t = audio.shape[0]

        def sample(model: Optional[PBNet], units: PBNetUnits, init: Tensor, kind: str) -> Optional[Tensor]:
            if model is None:
                return None
            z = fact * prior_latent(model, 1, t, units.prior_rho, generator=generator, device=device)
            out = model.generate(units.to_model(init, kind)[None, None], units.audio(audio)[None], z=z)[0]
            return units.to_data(out, kind)  # (T, 6) or (T, 2)

        pose = sample(pose_model, pose_units, init_pose, "pose")  # the pose latents first, then the blink ones
        blink = sample(blink_model, blink_units, init_blink, "blink")
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
    return pose, blink


class PoseBlinkSampler:
    """The PBNets (pose, blink or both) with their units; call it like `sample_pose_blink` without the models."""

    def __init__(self, pose_model: Optional[PBNet], blink_model: Optional[PBNet], *,
                 pose_units: PBNetUnits = PBNetUnits(), blink_units: PBNetUnits = PBNetUnits()) -> None:
        if pose_model is None and blink_model is None:
            raise ValueError("PoseBlinkSampler needs a pose PBNet, a blink PBNet or both")
        self.pose_model, self.blink_model = (m.eval() if m is not None else None for m in (pose_model, blink_model))
        self.pose_units, self.blink_units = pose_units, blink_units

    @property
    def models(self) -> list[PBNet]:
        return [m for m in (self.pose_model, self.blink_model) if m is not None]

    def describe(self) -> str:
        """What it samples: "pbnet" (both), or "pbnet pose" / "pbnet blink"."""
        return "pbnet" if len(self.models) == 2 else "pbnet pose" if self.pose_model is not None else "pbnet blink"

    @classmethod
    def from_checkpoints(cls, pose_ckpt: Optional[str | Path], blink_ckpt: Optional[str | Path], *,
                         pose_units: Optional[PBNetUnits] = None, blink_units: Optional[PBNetUnits] = None,
                         device: str | torch.device = "cpu") -> "PoseBlinkSampler":
        """Load the models given (either or both) from any supported checkpoint (see `checkpoints.open_checkpoint`);
        units from the files unless given."""
        pose = checkpoints.open_checkpoint(pose_ckpt, "pbnet-pose") if pose_ckpt else None
        blink = checkpoints.open_checkpoint(blink_ckpt, "pbnet-blink") if blink_ckpt else None
        return cls(pose.build().to(device) if pose else None, blink.build().to(device) if blink else None,
                   pose_units=pose_units or (units_of(pose) if pose else PBNetUnits()),
                   blink_units=blink_units or (units_of(blink) if blink else PBNetUnits()))

    def to(self, device: str | torch.device) -> "PoseBlinkSampler":
        for model in self.models:
            model.to(device)
        return self

    def __call__(self, audio_feat, init_pose, init_blink, seed: int = 0, fact: float = 1.0
                 ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """audio_feat (T, A), init_pose (6,), init_blink (2,) -> pose (T, 6), blink (T, 2), dataset units (None for
        a part without its model)."""
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
        given = files(request)  # the parts of neither a file nor a PBNet: held at the reference state
        pose, ref_pose = (given.pose, given.ref_pose) if pose_from or pose is None else (pose.cpu().numpy(), init_pose)
        blink, ref_blink = ((given.blink, given.ref_blink) if blink_from or blink is None
                            else (blink.cpu().numpy(), init_blink))
        return PoseBlink(pose, blink, ref_pose, ref_blink)

    return source
