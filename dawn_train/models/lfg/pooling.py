"""2x2 / stride-2 pooling for contiguous NCHW CPU tensors, as strided adds / maxima of row and column pairs.

Why: ATen's NCHW CPU pooling kernels walk one output at a time: ``avg_pool2d`` on (2, 128, 128, 128) takes ~20 ms
and ``max_pool2d`` ~40 ms, 5-10x what the same reduction costs as two vectorised elementwise ops over pairs of rows
and then pairs of columns.  The LFG encoders pool after every DownBlock2d (up to 128 channels at 128 px) and VGG19
max-pools four times per image and pyramid level.  Both modules subclass the torch ones (same arguments, no state)
and fall back to them for anything else (other sizes, odd shapes, channels-last or non-CPU tensors).

Values: the maximum is exact; the average sums (x00 + x10) + (x01 + x11) where ATen sums x00 + x01 + x10 + x11 in
order, so it can differ in the last bit.  Gradients: the average spreads grad / 4, as ATen; the max-pool fast path
is used only without autograd (the frozen VGG on the real image), where no tie-breaking rule is needed.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _pairs_ok(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous() and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0


def _is_2x2(pool: nn.Module) -> bool:
    two = (2, (2, 2))
    return (pool.kernel_size in two and pool.stride in two and pool.padding in (0, (0, 0))
            and not pool.ceil_mode)


class _AvgPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        rows = x.view(b, c, h // 2, 2, w)
        pairs = (rows[:, :, :, 0] + rows[:, :, :, 1]).view(b, c, h // 2, w // 2, 2)
        return (pairs[..., 0] + pairs[..., 1]).mul_(0.25)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        b, c, h2, w2 = grad.shape
        quarter = (grad * 0.25)[:, :, :, None, :, None]
        return quarter.expand(b, c, h2, 2, w2, 2).reshape(b, c, 2 * h2, 2 * w2)


def max_pool2x2(x: Tensor) -> Tensor:
    """2x2 max over pairs of rows, then pairs of columns (exact, no indices: not differentiable here)."""
    b, c, h, w = x.shape
    rows = x.view(b, c, h // 2, 2, w)
    pairs = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).view(b, c, h // 2, w // 2, 2)
    return torch.maximum(pairs[..., 0], pairs[..., 1])


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` with the fast path for kernel 2 / stride 2 on even-sized contiguous CPU maps."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> pooled (B, C, H', W'), as ``nn.AvgPool2d``."""
        if (_is_2x2(self) and self.count_include_pad and self.divisor_override is None and _pairs_ok(x)):
            return _AvgPool2x2.apply(x)
        return super().forward(x)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the fast path for kernel 2 / stride 2 when no gradient is recorded."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> pooled (B, C, H', W'), as ``nn.MaxPool2d``."""
        if (_is_2x2(self) and self.dilation in (1, (1, 1)) and not self.return_indices and _pairs_ok(x)
                and not (torch.is_grad_enabled() and x.requires_grad)):
            return max_pool2x2(x)
        return super().forward(x)
