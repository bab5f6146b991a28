"""Inception-v1 I3D (Carreira & Zisserman 2017, arXiv 1705.07750), Kinetics-400, for FVD.

Names follow piergiaj/pytorch-i3d (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.running_mean`,
`logits.conv3d.bias`, ...), the layout of `i3d_pretrained_400.pt` that VideoGPT's FVD and the
ports derived from it (common_metrics_on_video_quality `fvd/videogpt`, Open-Sora-Plan) load.
Every convolution and max pool pads TensorFlow-"SAME" style, computed from the input size.

BatchNorm eps: VideoGPT's copy (the one `i3d_pretrained_400.pt` is used with) sets 1e-5;
piergiaj's original (for `rgb_imagenet.pt`) sets 1e-3. `bn_eps` picks; the default is VideoGPT's.

Output: the 400 Kinetics logits averaged over the remaining time steps (VideoGPT's `forward`),
which is the feature VideoGPT's FVD uses, and what StyleGAN-V's TorchScript detector returns with
`return_features=True` (its "raw features before the softmax layer").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

I3D_SIZE = 224


def same_pad(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """Pad (B, C, T, H, W) so that a conv/pool with `kernel`, `stride` gives ceil(size / stride)."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """SAME-padded Conv3d -> BatchNorm3d -> ReLU (the logits unit: conv with bias only)."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
                 bn_eps: float = 1e-5, logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.is_logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(c_out, eps=bn_eps, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool 3x3x3 -> 1x1; channels
    `out` = (b0, b1a, b1b, b2a, b2b, b3b)."""

    def __init__(self, c_in: int, out: tuple[int, ...], bn_eps: float):
        super().__init__()
        self.b0 = Unit3D(c_in, out[0], bn_eps=bn_eps)
        self.b1a = Unit3D(c_in, out[1], bn_eps=bn_eps)
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(c_in, out[3], bn_eps=bn_eps)
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(c_in, out[5], bn_eps=bn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (endpoint, in channels, branch channels) of the Inception-v1 trunk, in order
MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """x: (B, 3, T, 224, 224) RGB scaled to [-1, 1], T >= 9  ->  (B, num_classes) logits averaged
    over time. At T = 16 one time step remains after the trunk; at T = 32 three are averaged."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3, bn_eps: float = 1e-5):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.trunk_names = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
                            "MaxPool3d_3a_3x3"]
        for name, a, b in MIXED:
            block = MaxPool3dSame(a, b) if name.startswith("MaxPool") else InceptionModule(a, b, bn_eps)
            self.add_module(name, block)
            self.trunk_names.append(name)
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(384 + 384 + 128 + 128, num_classes, logits=True)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> (B, 1024, T', H', W') output of Mixed_5c."""
        for name in self.trunk_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.logits(self.dropout(self.avg_pool(self.features(x))))  # (B, classes, T'', 1, 1)
        return x.squeeze(4).squeeze(3).mean(2)
