"""LFG pair augmentation as the official dataset applies it, on the device.

With probability `flip_prob` the pair is reversed in time (source <-> driving); otherwise, with
probability `flip_prob`, both frames are flipped horizontally.  Then colour jitter (brightness,
contrast, saturation, hue, each up to `jitter`) with one draw per pair, shared by both frames.
Hue is rotated in YIQ space (a close, cheap stand-in for torchvision's HSV hue shift)."""
from __future__ import annotations

import math

import torch
from torch import nn


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `angle` radians (B,) in YIQ space. x: (B, 3, H, W) in [0, 1]."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(x), 3, 3, device=x.device, dtype=x.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, x)


class PairAugment(nn.Module):
    def __init__(self, flip_prob: float = 0.5, jitter: float = 0.1):
        super().__init__()
        self.flip_prob, self.jitter = flip_prob, jitter

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source, driving: (B, 3, H, W) in [0, 1] -> augmented pair, same shapes."""
        if not self.training:
            return source, driving
        b = len(source)
        draw = lambda: torch.rand(b, 1, 1, 1, device=source.device)  # noqa: E731
        reverse = draw() < self.flip_prob
        mirror = (~reverse) & (draw() < self.flip_prob)
        source, driving = torch.where(reverse, driving, source), torch.where(reverse, source, driving)
        source = torch.where(mirror, source.flip(-1), source)
        driving = torch.where(mirror, driving.flip(-1), driving)
        if self.jitter > 0:
            factors = 1 + (torch.rand(3, b, 1, 1, 1, device=source.device) * 2 - 1) * self.jitter
            hue = (torch.rand(b, device=source.device) * 2 - 1) * self.jitter * 2 * math.pi
            source, driving = (self._jitter(x, factors, hue) for x in (source, driving))
        return source, driving

    @staticmethod
    def _jitter(x: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
        brightness, contrast, saturation = factors
        x = (x * brightness).clamp(0, 1)
        x = ((x - _grey(x).mean((2, 3), keepdim=True)) * contrast + _grey(x).mean((2, 3), keepdim=True)).clamp(0, 1)
        x = ((x - _grey(x)) * saturation + _grey(x)).clamp(0, 1)
        return _hue_rotate(x, hue).clamp(0, 1)
