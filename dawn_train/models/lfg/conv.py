"""``nn.Conv2d`` that runs convolutions with few output positions and many output channels as plain GEMMs.

Why: the LFG hourglasses end at 1x1..4x4 feature maps with up to 1024 x 1024 x 3 x 3 weights (9.4 M values), and
VGG19 on the 16-px pyramid level runs 512-channel convs at 2x2 and 1x1.  There oneDNN's direct convolution is slow:
it reorders the whole weight into its blocked layout on every call (forward and backward, the weights change every
step), while the arithmetic is a few output positions.  ``unfold`` + GEMMs read the weight as it lies.  The GEMMs
put the output positions first, (positions, channels): MKL (measured on an AMD Zen 5 core) runs a product whose
small dimension is the row count of its left operand 2-8x faster than the same product the other way round, which is
how ``W @ cols`` (forward) and ``W^T @ grad`` (input gradient) lie.  1024 -> 1024 at 2x2, B=2, forward +
backward: oneDNN 85 ms, unfold + ``W @ cols`` with autograd 69 ms, this layout 34 ms.  Used only where the output
has fewer positions than ``out_channels / 8`` (above that oneDNN wins).  Same sums in another order: outputs and
gradients agree with ``F.conv2d`` to float32 rounding (relative ~1e-6).  Parameters and state-dict keys are those of ``nn.Conv2d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..precision import at_least_float32

# GEMM path when out_channels >= GEMM_RATIO * (output positions over the batch): measured crossover 4-8
GEMM_RATIO = 8


class _GemmConv2d(torch.autograd.Function):
    """im2col convolution with hand-written backward; the (N, K) columns are the only activation it keeps."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        b, _, h, w = x.shape
        out_ch, _, kh, kw = weight.shape
        ho, wo = h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1
        # (B, C*kh*kw, Ho*Wo) -> (N, K): one row per output position, N = B*Ho*Wo, K = C*kh*kw
        cols = F.unfold(x, (kh, kw), padding=padding).transpose(1, 2).reshape(b * ho * wo, -1)
        w2d = weight.reshape(out_ch, -1)
        out = torch.addmm(bias, cols, w2d.t()) if bias is not None else cols @ w2d.t()  # (N, O)
        ctx.save_for_backward(cols, weight)
        ctx.geometry = (b, h, w, ho, wo, padding, bias is not None)
        # a new tensor, never a view: VGG19's in-place ReLU follows the conv, and autograd refuses in-place ops on a
        # custom function's view output (at 1x1 the permuted result alone is contiguous, `.contiguous()` a no-op)
        return out.view(b, ho, wo, out_ch).permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        cols, weight = ctx.saved_tensors
        b, h, w, ho, wo, padding, has_bias = ctx.geometry
        out_ch, _, kh, kw = weight.shape
        grad = grad.permute(0, 2, 3, 1).reshape(b * ho * wo, out_ch)  # (N, O)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = (grad @ weight.reshape(out_ch, -1)).view(b, ho * wo, -1).transpose(1, 2)  # (B, K, Ho*Wo)
            grad_x = F.fold(grad_cols, (h, w), (kh, kw), padding=padding)
        if ctx.needs_input_grad[1]:
            grad_w = (grad.t() @ cols).view_as(weight)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def conv2d_gemm(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """Stride-1, dilation-1, ungrouped conv2d with zero padding as im2col + GEMMs. (B, C, H, W) -> (B, O, Ho, Wo).

    The columns of all images sit in one matrix, so the weight is read once per call."""
    return _GemmConv2d.apply(x, weight, bias, tuple(padding))


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and state dict) with the :func:`conv2d_gemm` path on CPU for
    convolutions whose output has few positions compared with its channels; every other case is ``nn.Conv2d``'s."""

    def _use_gemm(self, x: Tensor) -> bool:
        if (x.device.type != "cpu" or x.dim() != 4 or self.groups != 1 or self.padding_mode != "zeros"
                or isinstance(self.padding, str) or self.stride != (1, 1) or self.dilation != (1, 1)):
            return False
        kh, kw = self.kernel_size
        positions = x.shape[0] * (x.shape[2] + 2 * self.padding[0] - kh + 1) * (x.shape[3] + 2 * self.padding[1] - kw + 1)
        return 0 < positions and self.out_channels >= GEMM_RATIO * positions

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self._use_gemm(input):
            if torch.is_autocast_enabled("cpu"):
                # bf16-mixed: these layers read many weights for few outputs, so a bfloat16 GEMM saves little and
                # autocast's cast of the weight (and of its gradient back) costs more: float32 here
                with torch.autocast("cpu", enabled=False):
                    return conv2d_gemm(at_least_float32(input), weight, bias, self.padding)
            return conv2d_gemm(input, weight, bias, self.padding)
        return super()._conv_forward(input, weight, bias)
