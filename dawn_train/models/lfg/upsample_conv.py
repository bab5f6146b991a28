"""Nearest x2 upsampling followed by a 3x3 convolution, computed as 2x2 convolutions at the low resolution.

Why: the LFG's ``UpBlock2d`` (``F.interpolate(x, scale_factor=2)`` then a 3x3 conv, padding 1) spends 9 multiply-adds
per output position and channel pair, but each output's 3x3 window on the upsampled map covers only 2x2 distinct
low-resolution pixels.  Output pixel (2i + a, 2j + b) reads low-resolution rows (i - 1, i) for a = 0 and (i, i + 1)
for a = 1 (columns likewise), with the 3x3 taps that land on the same pixel summed.  So the four output phases are
four 2x2 convolutions of the zero-padded low-resolution map: 16/36 of the arithmetic, and no upsampled copy of the
input.  On a 2-thread Zen 5 CPU, forward + backward, B=2: 256 -> 128 channels at 32 -> 64 px 84 -> 44 ms, 128 -> 64
at 64 -> 128 px 82 -> 45 ms; at 8x8 inputs and below it is slower (the weights, not the positions, dominate), hence
:data:`MIN_POSITIONS`.  Same sums in another order: outputs and gradients agree with the upsample + conv to float32
rounding (relative ~1e-6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# low-resolution input positions (H * W) from which the phase convolutions are used; measured: 16x16 1.4x faster,
# 32x32 and 64x64 1.8-1.9x, 8x8 0.85x (B=2, 2 threads)
MIN_POSITIONS = 256


def phase_weights(weight: Tensor) -> Tensor:
    """(O, C, 3, 3) -> (4 * O, C, 2, 2): the 2x2 kernel of each output phase (a, b), in the order (0, 0), (0, 1),
    (1, 0), (1, 1).  Phase a = 0 reads rows (i - 1, i) with taps (w0, w1 + w2); a = 1 reads (i, i + 1) with
    (w0 + w1, w2); columns likewise."""
    top, middle, bottom = weight.unbind(2)  # (O, C, 3) each
    by_rows = (torch.stack((top, middle + bottom), 2), torch.stack((top + middle, bottom), 2))  # (O, C, 2, 3)
    kernels = []
    for rows in by_rows:
        left, centre, right = rows.unbind(3)
        kernels += [torch.stack((left, centre + right), 3), torch.stack((left + centre, right), 3)]
    return torch.cat(kernels, 0)


def upsample_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.conv2d(F.interpolate(x, scale_factor=2), weight, bias, padding=1)`` (nearest upsampling) for a 3x3
    ``weight`` (O, C, 3, 3).  (B, C, H, W) -> (B, O, 2H, 2W)."""
    b, _, h, w = x.shape
    out_channels = weight.shape[0]
    # one convolution for all four phases: (B, 4 * O, H + 1, W + 1); phase (a, b) keeps rows a..a+H, columns b..b+W
    # the taps are summed in float32 (bf16 weights under DeepSpeed would round each partial sum)
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), phase_weights(weight.float()).to(weight.dtype),
                      None if bias is None else bias.repeat(4))
    phases = phases.view(b, 2, 2, out_channels, h + 1, w + 1)
    out = phases.new_empty(b, out_channels, h, 2, w, 2)
    for row in range(2):
        for col in range(2):
            out[:, :, :, row, :, col] = phases[:, row, col, :, row:row + h, col:col + w]
    return out.view(b, out_channels, 2 * h, 2 * w)
