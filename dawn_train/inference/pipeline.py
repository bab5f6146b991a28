"""One way to load the trained models for inference: `load_pipeline(lfg=..., a2v=..., pbnet_pose=...,
pbnet_blink=...)` reads each from any of our formats (Lightning .ckpt, DeepSpeed checkpoint directory,
converted/exported file, official release file; `checkpoints.open_checkpoint`) and returns a
:class:`Pipeline`, used by `dawn-train generate` and `dawn-train eval`.

The A2V-FDM comes with its EMA weights when the checkpoint has them (what validation sampled with)
and with what its training recorded (`A2VInfo`: frame size, audio feature, mean reference face box,
pose and blink: the defaults when an input does not say).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dawn_train import checkpoints
from dawn_train.inference.memory import MemoryModel
from dawn_train.inference.options import CHECKPOINT_WINDOW, FULL_ATTENTION
from dawn_train.inference.pose_blink import PoseBlink, PoseBlinkSampler
from dawn_train.models.a2v.conditioning import (
    animate,
    audio_dim,
    condition,
    face_box_vector,
    latent_motion,
    sample_windows,
    sampling_kwargs,
)
from dawn_train.tracking.media import to_uint8_video

DEFAULT_FACE_BOX = (0.2, 0.15, 0.8, 0.9)  # (x0, y0, x1, y1) / size when the checkpoint records none


def sampling_window(value: Optional[int | str]) -> Optional[int | str]:
    """A window choice as the model takes it: frames, None (full attention) or CHECKPOINT_WINDOW."""
    if value is None or (isinstance(value, str) and value.strip().lower() in FULL_ATTENTION):
        return None
    return value if value == CHECKPOINT_WINDOW else int(value)


@dataclass
class A2VInfo:
    """What an A2V checkpoint records besides weights (None where it does not)."""

    image_size: Optional[int] = None
    audio_feature: Optional[dict] = None
    face_box_mean: Optional[list] = None  # (x0, y0, x1, y1) / frame size
    ref_pose_mean: Optional[list] = None
    ref_blink_mean: Optional[list] = None
    curriculum_stage: Optional[int] = None
    lfg_checkpoint: Optional[str] = None
    condition: Optional[dict] = None  # `condition` keyword arguments the stage trained with (audio_norm, pose_scale)
    ema: bool = False  # EMA weights loaded
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, checkpoint: checkpoints.Checkpoint, ema: bool) -> "A2VInfo":
        record = dict(checkpoint.metadata.get("dawn_a2v") or {})
        known = {k: record.pop(k) for k in list(record) if k in cls.__dataclass_fields__ and k not in ("ema", "extra")}
        return cls(**known, ema=ema, extra=record)


def load_a2v(path: str | Path, use_ema: bool = True) -> tuple[nn.Module, A2VInfo]:
    """The A2V-FDM of a checkpoint (EMA weights when asked for and present) and its record."""
    checkpoint = checkpoints.open_checkpoint(path, "a2v")
    ema = use_ema and checkpoint.ema_state_dict is not None
    return checkpoint.build(use_ema=ema).eval(), A2VInfo.of(checkpoint, ema)


def resolve_device(device: Optional[str | torch.device]) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass
class Pipeline:
    """LFG + A2V-FDM (+ PBNet sampler), on one device."""

    lfg: nn.Module
    a2v: nn.Module
    info: A2VInfo
    pose_blink: Optional[PoseBlinkSampler] = None
    device: torch.device = torch.device("cpu")

    @property
    def audio_dim(self) -> int:
        return audio_dim(self.a2v.unet.cond_dim)

    @property
    def image_size(self) -> Optional[int]:
        return self.info.image_size

    def set_window(self, window_size: Optional[int | str] = CHECKPOINT_WINDOW) -> None:
        """Sampling window (model convention): frames, None or "none" = full attention, "checkpoint" = the
        checkpoint's own."""
        window = sampling_window(window_size)
        if window != CHECKPOINT_WINDOW:
            self.a2v.unet.window_size = window

    def face_box(self, size: int, face_box: Optional[Sequence[float]] = None) -> list[float]:
        """The face box (pixels of a size x size frame): given, else the training data's mean."""
        mean = self.info.face_box_mean or DEFAULT_FACE_BOX
        box = list(face_box) if face_box is not None else [v * size for v in mean]
        if len(box) != 4:
            raise ValueError(f"face_box must be x0,y0,x1,y1 pixels, got {box}")
        return [float(v) for v in box]

    @torch.no_grad()
    def animate(self, ref: Tensor, box: Sequence[float], audio_feat: np.ndarray, motion: PoseBlink, *, seed: int = 0,
                steps: Optional[int] = None, eta: Optional[float] = None, decode_chunk: int = 32,
                progress=None, guidance: float = 1.0) -> Tensor:
        """ref (1, 3, R, R) in [0, 1], box (x0, y0, x1, y1) pixels, audio_feat (N, D), driving motion ->
        video (N, 3, R, R) in [0, 1]: every frame in one DDIM run, then LFG decoding.  `guidance`: classifier-free
        guidance scale (1 = none; `models/a2v/conditioning.sampling_kwargs`)."""
        dev, size = ref.device, ref.shape[-1]

        def batch(a) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)[None]

        cond = self.condition(audio_feat, motion)
        generator = torch.Generator(device=dev).manual_seed(int(seed))
        out = animate(self.lfg, self.a2v, ref, face_box_vector(batch(box), size, size), cond, generator=generator,
                      steps=steps, eta=eta, decode_chunk=decode_chunk, progress=progress, guidance=guidance)
        return out["video"][0]

    def sampling_steps(self, steps: Optional[int]) -> int:
        return int(steps or self.a2v.diffusion.sampling_timesteps)

    # ---- long audio: motion in windows, frames decoded chunk by chunk ----------------------------------
    def condition(self, audio_feat: np.ndarray, motion: PoseBlink) -> Tensor:
        """(1, N, D + 8) A2V condition of per-frame audio features (N, D) and the driving motion."""
        def batch(a) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)[None]

        return condition(batch(audio_feat), batch(motion.pose), batch(motion.blink), batch(motion.ref_pose),
                         batch(motion.ref_blink), **(self.info.condition or {}))

    @torch.no_grad()
    def sample_motion(self, ref: Tensor, box: Sequence[float], cond: Tensor, *, seed: int = 0,
                      steps: Optional[int] = None, eta: Optional[float] = None, window: Optional[int] = None,
                      overlap: int = 0, progress=None, guidance: float = 1.0) -> Tensor:
        """ref (1, 3, R, R) in [0, 1], box (x0, y0, x1, y1) pixels, cond (1, N, D + 8) -> latent motion x0
        (1, 3, N, h, w), float32.  `window` None: every frame in one DDIM run (as :meth:`animate`, same noise
        for a seed); else windows of `window` frames sharing `overlap`, cross-faded
        (`models/a2v/conditioning.sample_windows`); `guidance` as :meth:`animate`."""
        size = ref.shape[-1]
        with torch.autocast(self.device.type, enabled=False):
            ref_fea = self.lfg.reference_feature(ref.float())
        vector = face_box_vector(torch.as_tensor([list(box)], dtype=torch.float32, device=self.device), size, size)
        dtype = next(self.a2v.parameters()).dtype
        if window is None or window >= cond.shape[1]:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
            return self.a2v.sample(ref_fea.to(dtype), vector, cond, generator=generator, sampling_timesteps=steps,
                                   progress=progress, **sampling_kwargs(eta, guidance)).float()
        return sample_windows(self.a2v, ref_fea, vector, cond, window=window, overlap=overlap, seed=int(seed),
                              steps=steps, eta=eta, progress=progress, guidance=guidance)

    @torch.no_grad()
    def decode_frames(self, ref: Tensor, x0: Tensor, chunk: int = 32) -> Iterator[np.ndarray]:
        """Latent motion x0 (1, 3, N, h, w) -> uint8 frames (c, R, R, 3), `chunk` frames at a time (the LFG
        decode of one chunk is all that is in memory)."""
        for start in range(0, x0.shape[2], max(1, int(chunk))):
            flow, occlusion = latent_motion(x0[:, :, start:start + chunk].float())
            with torch.autocast(self.device.type, enabled=False):
                video = self.lfg.decode(ref.float(), flow, occlusion)[0]  # (c, 3, R, R)
            yield to_uint8_video(video)

    def memory_model(self, *, size: int, decode_chunk: int = 32, steps: Optional[int] = None,
                     pbnet: bool = True) -> MemoryModel:
        """The working-memory model of this pipeline (`inference/memory.py`), with the PBNets when they run."""
        pbnets = self.pose_blink.models if pbnet and self.pose_blink else []
        return MemoryModel(self.lfg, self.a2v, pbnets, image_size=size, audio_dim=self.audio_dim,
                           decode_chunk=decode_chunk, steps=self.sampling_steps(steps), device=self.device)


def load_pipeline(lfg: str | Path, a2v: str | Path, *, pbnet_pose: Optional[str | Path] = None,
                  pbnet_blink: Optional[str | Path] = None, device: Optional[str | torch.device] = None,
                  use_ema: bool = True) -> Pipeline:
    """Load the LFG, the A2V-FDM (EMA weights and record) and, when a PBNet checkpoint is given (pose, blink or
    both), the pose/blink sampler, on `device` (default: CUDA when available).  Fails before any expensive work
    on a missing, unreadable or wrong-kind checkpoint."""
    dev = resolve_device(device)
    lfg_model = checkpoints.load_model(lfg, "lfg").eval().to(dev)
    a2v_model, info = load_a2v(a2v, use_ema=use_ema)
    sampler = None
    if pbnet_pose or pbnet_blink:
        sampler = PoseBlinkSampler.from_checkpoints(pbnet_pose, pbnet_blink, device=dev)
        a2v_dim = audio_dim(a2v_model.unet.cond_dim)
        for path, model in ((pbnet_pose, sampler.pose_model), (pbnet_blink, sampler.blink_model)):
            if model is not None and model.audio_dim != a2v_dim:  # they read the features computed for the A2V-FDM
                raise ValueError(f"{path}: this PBNet reads {model.audio_dim}-d audio features, the A2V-FDM {a2v} "
                                 f"{a2v_dim}-d ones: train both on shards with the same --features")
    return Pipeline(lfg_model, a2v_model.to(dev), info, sampler, dev)

