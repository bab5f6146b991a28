"""Float32 islands in a bf16-mixed model: the parts whose numbers are coordinates, not features.

Under autocast (Lightning's `precision: bf16-mixed`) convolutions and matrix products run in bfloat16, whose 8-bit
mantissa is fine for features but puts a coordinate on a grid of ~1/128 of the frame.  The LFG's region, flow and
background predictors compute such coordinates (softmax-weighted moments, mixtures of motions), so they run in
float32 while the generator's encoder/decoder and the perceptual network, most of a step, run in bfloat16.

    class RegionPredictor(nn.Module):
        @float32_under_autocast
        def forward(self, x): ...

Without autocast nothing changes: tensors keep their dtype (float64 stays float64, a half model stays half).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import Tensor


def at_least_float32(t: Tensor) -> Tensor:
    """bfloat16/float16 -> float32; float32 and float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t


def _upcast(value: Any) -> Any:
    if isinstance(value, Tensor):
        return at_least_float32(value)
    if isinstance(value, dict):
        return {k: _upcast(v) for k, v in value.items()}
    return value


def _device_type(args: tuple, kwargs: dict) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value.device.type
        if isinstance(value, dict):
            found = _device_type((), value)
            if found:
                return found
    return None


def float32_under_autocast(method: Callable) -> Callable:
    """Decorate a `forward`: when autocast is on for its inputs' device, run it with autocast off on float32 inputs
    (tensors and dicts of tensors); otherwise call it as it is."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        device = _device_type(args, kwargs)
        if device is None or not torch.is_autocast_enabled(device):
            return method(self, *args, **kwargs)
        with torch.autocast(device, enabled=False):
            return method(self, *(_upcast(a) for a in args), **{k: _upcast(v) for k, v in kwargs.items()})

    return wrapper
