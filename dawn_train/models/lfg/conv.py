"""``nn.Conv2d`` that runs convolutions with few output positions and many output channels as one plain GEMM.

Why: the LFG hourglasses end at 1x1..4x4 feature maps with up to 1024 x 1024 x 3 x 3 weights (9.4 M values), and
VGG19 on the 16-px pyramid level runs 512-channel convs at 2x2 and 1x1.  There oneDNN's direct convolution is slow:
it reorders the whole weight into its blocked layout on every call (forward and backward, the weights change every
step), while the arithmetic is a few output positions.  ``unfold`` + one GEMM reads the weight as it lies, which
is 1.1x - 3.5x faster forward + backward for these layers (micro-benchmark in the perf notes: 1024->1024 at 2x2,
B=2: 66 -> 42 ms; 512->1024 at 2x2: 47 -> 25 ms) and slower once the output has more positions than
``out_channels / 8``, so it is used only below that.  Same sums in another order: outputs agree with
``F.conv2d`` to float32 rounding (relative ~1e-6).  Parameters and state-dict keys are those of ``nn.Conv2d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..precision import at_least_float32

# GEMM path when out_channels >= GEMM_RATIO * (output positions over the batch): measured crossover 4-8
GEMM_RATIO = 8


def conv2d_gemm(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """Stride-1, dilation-1, ungrouped conv2d with zero padding as im2col + one GEMM. (B, C, H, W) -> (B, O, Ho, Wo).

    The columns of all images sit side by side, (C*kh*kw, B*Ho*Wo), so the weight is read once per call; autograd
    gives the backward (two GEMMs and ``fold``)."""
    b = x.shape[0]
    out_ch, _, kh, kw = weight.shape
    ho, wo = x.shape[2] + 2 * padding[0] - kh + 1, x.shape[3] + 2 * padding[1] - kw + 1
    cols = F.unfold(x, (kh, kw), padding=padding)  # (B, C*kh*kw, Ho*Wo)
    cols = cols.transpose(0, 1).reshape(cols.shape[1], b * ho * wo)
    w2d = weight.reshape(out_ch, -1)
    out = torch.addmm(bias[:, None], w2d, cols) if bias is not None else w2d @ cols
    # contiguous: a (O, B, ...)-major layout would leak into the ops after it (a copy of O*B*Ho*Wo values)
    return out.view(out_ch, b, ho, wo).transpose(0, 1).contiguous()


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
