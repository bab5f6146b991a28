"""Colour and flip augmentation on the device: LFG pairs as the official dataset applies it, and
A2V-FDM clips (one colour draw per clip, shared by the clip and its reference frame).

With probability `flip_prob` the pair is reversed in time (source <-> driving); otherwise, with
probability `flip_prob`, both frames are flipped horizontally.  Then colour jitter (brightness,
contrast, saturation, hue, each up to `jitter`) with one draw per pair, shared by both frames.
Hue is rotated in YIQ space (a close, cheap stand-in for torchvision's HSV hue shift)."""
from __future__ import annotations

import math

import torch
from torch import nn


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `angle` radians (B,) in YIQ space. x: (B, 3, H, W) in [0, 1]."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(x), 3, 3, device=x.device, dtype=x.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, x)


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                 hue: torch.Tensor) -> torch.Tensor:
    """Per-image colour jitter.  x: (N, 3, H, W) in [0, 1]; brightness, contrast, saturation: (N,) factors
    (1 = unchanged); hue: (N,) rotation in radians.  Applied in that order, clamped after each."""
    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, 1, 1, 1)

    x = (x * per_image(brightness)).clamp(0, 1)
    mean = grey(x).mean((2, 3), keepdim=True)
    x = ((x - mean) * per_image(contrast) + mean).clamp(0, 1)
    luma = grey(x)
    x = ((x - luma) * per_image(saturation) + luma).clamp(0, 1)
    return hue_rotate(x, hue).clamp(0, 1)


def clip_color_jitter(ref: torch.Tensor, frames: torch.Tensor,
                      maxima: tuple[float, float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Same colour jitter for a clip and its reference, one draw per clip.  ref (B, 3, H, W), frames
    (B, T, 3, H, W) in [0, 1]; maxima = (brightness, contrast, saturation, hue)."""
    b, t = frames.shape[:2]
    bri, con, sat, hue = maxima

    def draw(m: float) -> torch.Tensor:
        return 1 + (torch.rand(b, device=ref.device) * 2 - 1) * m

    fb, fc, fs = draw(bri), draw(con), draw(sat)
    angle = (torch.rand(b, device=ref.device) * 2 - 1) * hue * 2 * math.pi
    x = torch.cat((ref[:, None], frames), dim=1).flatten(0, 1)  # (B (1 + T), 3, H, W)
    x = color_jitter(x, *(v.repeat_interleave(t + 1) for v in (fb, fc, fs, angle)))
    x = x.unflatten(0, (b, t + 1))
    return x[:, 0], x[:, 1:]


class PairAugment(nn.Module):
    def __init__(self, flip_prob: float = 0.5, jitter: float = 0.1):
        super().__init__()
        self.flip_prob, self.jitter = flip_prob, jitter

    def forward(self, source: torch.Tensor, driving: torch.Tensor, mask: torch.Tensor | None = None,
                points: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """source, driving: (B, 3, H, W) in [0, 1] -> augmented pair, same shapes.  `mask` (B, K, H, W), K
        regions of the pair that are symmetric in time (e.g. the union of both frames' mouth boxes), is mirrored
        with the pair and returned after it; `points` (B, 2, K, 2), the source's and the driving frame's K
        landmarks (x, y) in pixels (pixel j covers [j, j + 1)), follow the pair through time reversal and mirror
        (their order within a frame is kept) and are returned last."""
        extra = tuple(x for x in (mask, points) if x is not None)
        if not self.training:
            return (source, driving, *extra)
        b = len(source)
        def draw() -> torch.Tensor:
            return torch.rand(b, 1, 1, 1, device=source.device)

        reverse = draw() < self.flip_prob
        mirror = (~reverse) & (draw() < self.flip_prob)
        source, driving = torch.where(reverse, driving, source), torch.where(reverse, source, driving)
        source = torch.where(mirror, source.flip(-1), source)
        driving = torch.where(mirror, driving.flip(-1), driving)
        if mask is not None:
            mask = torch.where(mirror, mask.flip(-1), mask)
        if points is not None:  # reverse, mirror: (B, 1, 1, 1), as points' (B, frame, K, xy)
            points = torch.where(reverse, points.flip(1), points)
            mirrored = torch.stack((source.shape[-1] - points[..., 0], points[..., 1]), dim=-1)
            points = torch.where(mirror, mirrored, points)
        if self.jitter > 0:
            factors = 1 + (torch.rand(3, b, device=source.device) * 2 - 1) * self.jitter
            hue = (torch.rand(b, device=source.device) * 2 - 1) * self.jitter * 2 * math.pi
            source, driving = (color_jitter(x, *factors, hue) for x in (source, driving))
        return (source, driving, *(x for x in (mask, points) if x is not None))
