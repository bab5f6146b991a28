"""The UNet's per-frame convolutions on CPUs: oneDNN's kernel whatever the input's size.

For a float32 input torch picks its native im2col convolution over oneDNN when the input is small (batch 1 and
B x C x T x H <= 20480 elements, a kernel of at most 3 x 3: "native is faster for some cases").  Every sampling
call of a small UNet falls there: the demo's (16-32 channels, 8-16 px latents) over a 40-frame window, where its
(1, 3, 3) convolutions ran 5x slower than oneDNN's (2.6 vs 0.5 ms at 16 channels, 16 px) and a whole denoise call
1.6x slower.  Larger inputs (the release UNet, every training batch above 1) take oneDNN anyway.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, state dict and function) that runs oneDNN's convolution for float32 CPU inputs
    of any size; everything else (CUDA, bf16 autocast, the meta device, torch.compile, non-zero padding modes) takes
    ``nn.Conv3d``'s own path.  Results equal it up to float32 rounding."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and torch.backends.mkldnn.is_available()
                and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling()):
            return torch.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)
