"""What A2V-FDM sees and produces, as pure tensor maths shared by training and inference.

    LFG motion (flow (B, T, h, w, 2), occlusion (B, T, 1, h, w))  <->  x (B, 3, T, h, w)
    face box (B, 4) pixels  ->  the official 6-vector read by `bbox_mask`
    mouth landmarks (B, T, K, 2)  ->  mouth mask (B, T, h, w) for the lip loss
    audio (B, T, D), pose (B, T, 6), blink (B, T, 2), reference state  ->  condition (B, T, D + 8)

Pose/blink units: deltas against the reference frame's state, in the shards' raw units (degrees for
the three angles, scale and tx/ty as `data/schema.py` documents; blink = lid distance / eye width),
exactly as the official code feeds its raw 3DDFA values.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor

POSE_DIM, BLINK_DIM = 6, 2
MOTION_DIM = POSE_DIM + BLINK_DIM  # condition features after the audio ones


def latent_target(flow: Tensor, occlusion: Tensor) -> Tensor:
    """LFG motion -> diffusion state.  flow (B, T, h, w, 2), occlusion (B, T, 1, h, w) in [0, 1]
    -> x_start (B, 3, T, h, w) = [flow x, flow y, 2 * occlusion - 1]."""
    return torch.cat((rearrange(flow, "b t h w c -> b c t h w"),
                      rearrange(occlusion, "b t c h w -> b c t h w") * 2 - 1), dim=1)


def latent_motion(x0: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`latent_target`: x0 (B, 3, T, h, w) -> flow (B, T, h, w, 2), occlusion (B, T, 1, h, w)."""
    flow = rearrange(x0[:, :2], "b c t h w -> b t h w c")
    occlusion = rearrange((x0[:, 2:3] + 1) / 2, "b c t h w -> b t c h w").clamp(0, 1)
    return flow, occlusion


def face_box_vector(box: Tensor, height: int, width: int) -> Tensor:
    """Reference face box (B, 4) = (x0, y0, x1, y1) pixels -> the official (B, 6) vector
    [x_min, x_max, y_min, y_max, D4, D5] read by `bbox_mask`, which divides x by D4 and y by D5.
    We pass D4 = frame width and D5 = frame height, so non-square frames are normalised correctly
    (the official record holds H, W in that order; identical for the square crops used everywhere)."""
    box = box.float()
    size = box.new_tensor([width, height]).expand(box.shape[0], 2)
    return torch.stack((box[:, 0], box[:, 2], box[:, 1], box[:, 3], size[:, 0], size[:, 1]), dim=1)


def mouth_mask(mouth_lmk: Tensor, height: int, width: int, size: int) -> Tensor:
    """Mouth landmarks (B, T, K, 2) in frame pixels -> (B, T, size, size) float mask of each frame's
    axis-aligned landmark box at latent resolution (official `generate_mouth_mask`: coordinates scaled by
    size / frame size, box from int(min) to int(max + 1) inclusive)."""
    scale = mouth_lmk.new_tensor([size / width, size / height])
    pts = mouth_lmk.float() * scale
    lo = pts.amin(dim=2).floor().long()  # (B, T, 2)
    hi = (pts.amax(dim=2) + 1).floor().long()
    idx = torch.arange(size, device=mouth_lmk.device)
    cols = (idx >= lo[..., 0:1]) & (idx <= hi[..., 0:1])  # (B, T, size)
    rows = (idx >= lo[..., 1:2]) & (idx <= hi[..., 1:2])
    return (rows[..., :, None] & cols[..., None, :]).float()


def condition(audio_feat: Tensor, pose: Tensor, blink: Tensor, ref_pose: Tensor, ref_blink: Tensor,
              pose_scale: Optional[Tensor] = None, audio_norm: Optional[tuple[float, float]] = None,
              blink_scale: float = 1.0, motion_shift: float = 0.0) -> Tensor:
    """Per-frame condition (B, T, D + 6 + 2) = [audio (B, T, D) | pose - ref_pose | blink - ref_blink]
    (pose (B, T, 6), blink (B, T, 2), ref_pose (B, 6), ref_blink (B, 2), raw units).  `pose_scale` (6,)
    optionally multiplies the pose deltas (a stage setting for datasets whose units differ wildly);
    `audio_norm` = (mean, std) standardises the audio features.  Every condition part enters the UNet through
    SiLU -> Linear, so features far below zero (log-mel, mean about -9) reach it as ~0 and the model cannot
    hear them; HuBERT features are near zero-mean already (official: no normalisation).  The same holds for
    motion: a head turned 5 degrees the other way than the reference gives SiLU(-5) ~ -0.03, as if it had not
    turned, and SiLU is not monotonic below -1.28.  `blink_scale` multiplies the blink deltas and
    `motion_shift` is added to every (scaled) pose and blink delta, so that deltas of about +-2 land where SiLU
    tells them apart (defaults 1 and 0: the official raw deltas)."""
    audio = audio_feat.float()
    if audio_norm is not None:
        audio = (audio - float(audio_norm[0])) / float(audio_norm[1])
    dpose = pose.float() - ref_pose.float()[:, None]
    if pose_scale is not None:
        dpose = dpose * torch.as_tensor(pose_scale, dtype=dpose.dtype, device=dpose.device)
    dblink = (blink.float() - ref_blink.float()[:, None]) * float(blink_scale)
    return torch.cat((audio, dpose + float(motion_shift), dblink + float(motion_shift)), dim=-1)


def check_guidance(guidance: float) -> float:
    """A classifier-free guidance scale as a float; anything but a positive number is refused (`generate` and
    `eval` call this before loading any model)."""
    if not float(guidance) > 0:
        raise ValueError(f"--guidance {guidance}: the guidance scale must be > 0 (1 = none)")
    return float(guidance)


def sampling_kwargs(eta: Optional[float] = None, guidance: float = 1.0) -> dict:
    """Keyword arguments of `A2VFDM.sample` for a DDIM `eta` (None: the model's) and a classifier-free guidance
    scale (1 = none, the release's sampling): the denoiser's output is null + guidance * (cond - null), null being
    the output for the null condition the model learnt with `null_cond_prob`; one more UNet call per step."""
    guidance = check_guidance(guidance)
    kwargs = {"eta": eta} if eta is not None else {}
    if guidance != 1:
        kwargs["cond_scale"] = guidance
    return kwargs


def audio_dim(cond_dim: int) -> int:
    """Audio features per frame of a UNet whose condition has `cond_dim` features."""
    return cond_dim - MOTION_DIM


@torch.no_grad()
def animate(lfg, a2v, ref: Tensor, box: Tensor, cond: Tensor, *, generator: Optional[torch.Generator] = None,
            steps: Optional[int] = None, eta: Optional[float] = None, decode_chunk: Optional[int] = 32,
            progress=None, guidance: float = 1.0) -> dict[str, Tensor]:
    """The core of generation, used by `dawn-train generate`, `eval` and the validation sample videos:
    every frame's latent motion in one non-autoregressive DDIM run, then LFG decoding.

    lfg: a `LatentFlowGenerator`; a2v: an `A2VFDM`; ref: (B, 3, R, R) reference frames in [0, 1];
    box: (B, 6) face-box vectors (:func:`face_box_vector`); cond: (B, N, D + 8) (:func:`condition`);
    guidance: classifier-free guidance scale (:func:`sampling_kwargs`).  Returns x0 (B, 3, N, h, w), flow
    (B, N, h, w, 2), occlusion (B, N, 1, h, w) and video (B, N, 3, R, R) in [0, 1].  The frozen LFG runs in
    float32 (outside any autocast)."""
    with torch.autocast(ref.device.type, enabled=False):
        ref_fea = lfg.reference_feature(ref.float())
    x0 = a2v.sample(ref_fea, box, cond, generator=generator, sampling_timesteps=steps,
                    progress=progress, **sampling_kwargs(eta, guidance))
    flow, occlusion = latent_motion(x0.float())
    with torch.autocast(ref.device.type, enabled=False):
        video = lfg.decode(ref.float(), flow, occlusion, chunk_size=decode_chunk)
    return {"x0": x0, "flow": flow, "occlusion": occlusion, "video": video.clamp(0, 1)}


# ---- generation in windows (bounded memory for long audio) --------------------------------------------
def window_spans(frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of windows of `window` frames covering `frames` frames; consecutive windows share at least
    `overlap` frames (the last window ends at the last frame, so it may share more).  One window when
    `window >= frames`."""
    if window >= frames:
        return [(0, frames)]
    if not 0 <= overlap < window:
        raise ValueError(f"window overlap must be in [0, {window}) frames, got {overlap}")
    spans, start = [], 0
    while start + window < frames:
        spans.append((start, start + window))
        start += window - overlap
    spans.append((frames - window, frames))
    return spans


def crossfade_weights(length: int, device=None, dtype=torch.float32) -> Tensor:
    """(length,) weights of the incoming window over an overlap of `length` frames: a linear ramp strictly
    between 0 and 1, (i + 1) / (length + 1), so neither window is dropped at either end."""
    return torch.arange(1, length + 1, device=device, dtype=dtype) / (length + 1)


def _mix64(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser per value): the same on every platform and run."""
    mask = (1 << 64) - 1
    x = 0x9E3779B97F4A7C15
    for value in values:
        x = (x ^ (int(value) & mask)) * 0xBF58476D1CE4E5B9 & mask
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & mask
        x ^= x >> 31
    return x & ((1 << 63) - 1)


def frame_noise(seed: int, draw: int, start: int, end: int, shape: tuple[int, ...], device=None,
                dtype=torch.float32) -> Tensor:
    """Standard-normal noise (B, C, end - start, h, w) for `shape` = (B, C, h, w), where frame f's values depend
    only on (seed, draw, f): two windows that share frames draw the same noise for them, so their samples
    agree closely there and the cross-fade between them is smooth."""
    b, c, h, w = shape
    frames = [torch.randn((b, c, h, w), generator=torch.Generator().manual_seed(_mix64(seed, draw, f)))
              for f in range(start, end)]
    return torch.stack(frames, dim=2).to(device=device, dtype=dtype)


@torch.no_grad()
def sample_windows(a2v, ref_fea: Tensor, box: Tensor, cond: Tensor, *, window: int, overlap: int, seed: int = 0,
                   steps: Optional[int] = None, eta: Optional[float] = None, progress=None,
                   guidance: float = 1.0) -> Tensor:
    """Latent motion x0 (B, 3, N, h, w) of N = cond.shape[1] frames, sampled in windows of `window` frames
    (:func:`window_spans`) instead of one pass: memory is that of one window whatever N.

    Each window is one non-autoregressive DDIM run with the same reference (`ref_fea`, `box`; the condition's
    pose/blink deltas keep referring to the first frame's state), and draws per-frame noise
    (:func:`frame_noise`, so shared frames get the same noise).  Consecutive windows are cross-faded in
    latent-flow space over their shared frames (:func:`crossfade_weights`).  The price: frames only see
    their own window (temporal attention, GroupNorm statistics), so motion is consistent within a window
    and blended across seams rather than planned over the whole clip.  `progress` wraps each window's DDIM
    step iterator; `guidance` as :func:`animate`."""
    b, n = cond.shape[:2]
    h, w = ref_fea.shape[-2:]
    channels = a2v.diffusion.channels
    steps = int(steps or a2v.diffusion.sampling_timesteps)
    out = torch.zeros(b, channels, n, h, w, device=cond.device, dtype=torch.float32)
    end_prev = 0
    for start, end in window_spans(n, window, overlap):
        noise = [frame_noise(seed, d, start, end, (b, channels, h, w), cond.device) for d in range(steps + 1)]
        x0 = a2v.sample(ref_fea, box, cond[:, start:end], noise=noise, sampling_timesteps=steps,
                        progress=progress, **sampling_kwargs(eta, guidance)).float()
        del noise
        shared = max(0, end_prev - start)
        if shared:
            weight = crossfade_weights(shared, cond.device)[:, None, None]  # (shared, 1, 1) over (C, T, h, w)
            out[:, :, start:end_prev] = torch.lerp(out[:, :, start:end_prev], x0[:, :, :shared], weight)
        out[:, :, start + shared:end] = x0[:, :, shared:]
        end_prev = end
    return out
