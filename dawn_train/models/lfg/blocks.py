"""Building blocks of the LFG (MRAA / RegionMM family): conv blocks, hourglass, anti-aliased downsampling and
coordinate-grid helpers.

Attribute names (``conv``, ``norm``, ``down_blocks``, ``up_blocks``, ``weight`` of the anti-alias kernel, ...) follow
the official ``LFG/modules/util.py`` so that official state dicts load with ``strict=True``. The official code uses
``SynchronizedBatchNorm2d``; its state-dict keys equal ``nn.BatchNorm2d``'s, and cross-GPU sync is left to the trainer
(``Trainer(sync_batchnorm=True)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .conv import Conv2d
from .pooling import AvgPool2d
from .upsample_conv import MIN_POSITIONS, upsample_conv3x3

# ----------------------------------------------------------------------------------------------------------------------
# coordinate helpers


def make_coordinate_grid(h: int, w: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Pixel-centre grid in [-1, 1]. Returns (h, w, 2), last dim (x, y); x = 2*j/(w-1) - 1, y = 2*i/(h-1) - 1.

    The op order (divide, then scale by 2, then shift) is the official one, so grids are bit-identical.
    """
    x = 2 * (torch.arange(w, device=device, dtype=dtype) / (w - 1)) - 1
    y = 2 * (torch.arange(h, device=device, dtype=dtype) / (h - 1)) - 1
    return torch.stack([x.expand(h, w), y[:, None].expand(h, w)], dim=-1)


def to_homogeneous(coordinates: Tensor) -> Tensor:
    """(..., 2) -> (..., 3) by appending ones."""
    return torch.cat([coordinates, torch.ones_like(coordinates[..., :1])], dim=-1)


def from_homogeneous(coordinates: Tensor) -> Tensor:
    """(..., 3) -> (..., 2) by dividing by the last coordinate."""
    return coordinates[..., :2] / coordinates[..., 2:3]


def region_to_gaussian(center: Tensor, covar: Tensor | float, h: int, w: int) -> Tensor:
    """Unnormalised Gaussian bump per region on an (h, w) grid.

    center: (..., 2) in [-1, 1]; covar: (..., 2, 2) full covariance, or a float isotropic variance.
    Returns (..., h, w) = exp(-0.5 * (z - mu)^T covar^-1 (z - mu)).
    """
    grid = make_coordinate_grid(h, w, device=center.device, dtype=center.dtype)
    diff = grid - center[..., None, None, :]  # (..., h, w, 2)
    if isinstance(covar, float):
        return torch.exp(-0.5 * (diff**2).sum(-1) / covar)
    # Same product order as the official (d^T P) d, so rounding matches closely.
    precision = torch.inverse(covar)[..., None, None, :, :]  # (..., 1, 1, 2, 2)
    under_exp = torch.matmul(torch.matmul(diff.unsqueeze(-2), precision), diff.unsqueeze(-1))
    return torch.exp(-0.5 * under_exp[..., 0, 0])


def resize_flow(flow: Tensor, h: int, w: int) -> Tensor:
    """Bilinearly resize a sampling grid (B, h0, w0, 2) to (B, h, w, 2) (align_corners=False, as the official code)."""
    if flow.shape[1:3] == (h, w):
        return flow
    flow = F.interpolate(rearrange(flow, "b h w c -> b c h w"), size=(h, w), mode="bilinear")
    return rearrange(flow, "b c h w -> b h w c")


def warp(inp: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp (B, C, H, W) with an absolute grid (B, h, w, 2) in [-1, 1], resized to (H, W) first.

    ``grid_sample`` keeps its defaults (bilinear, zero padding, align_corners=False): the official weights were
    trained with exactly this sampling.
    """
    flow = resize_flow(flow, *inp.shape[2:])
    return F.grid_sample(inp, flow.to(inp.dtype), align_corners=False)


# ----------------------------------------------------------------------------------------------------------------------
# conv blocks


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU, resolution preserved. (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)), inplace=True)  # in place on BN's fresh output (see ResBlock2d)


class DownBlock2d(nn.Module):
    """conv3x3 -> BN -> ReLU -> AvgPool2. (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)
        self.pool = AvgPool2d(kernel_size=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x)), inplace=True))


class UpBlock2d(nn.Module):
    """nearest x2 -> conv3x3 -> BN -> ReLU. (B, C_in, H, W) -> (B, C_out, 2H, 2W).  On larger CPU maps the first two
    run as 2x2 convolutions at the low resolution (`upsample_conv`, 16/36 of the arithmetic, same function)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.uses_phases(x):
            out = upsample_conv3x3(x, self.conv.weight, self.conv.bias)
        else:
            out = self.conv(F.interpolate(x, scale_factor=2))  # nearest, as the official UpBlock2d
        return F.relu(self.norm(out), inplace=True)

    def uses_phases(self, x: Tensor) -> bool:
        """Whether the upsample + conv runs as the four 2x2 phase convolutions (`upsample_conv`): a plain 3x3 conv
        with padding 1 on a CPU map of at least ``MIN_POSITIONS`` positions.  Measured on CPUs only, so a GPU keeps
        the upsample + conv."""
        conv = self.conv
        # the conv's own call is bypassed: not for a wrapped conv (activation checkpointing) or one with hooks
        if type(conv) is not Conv2d or conv._forward_hooks or conv._forward_pre_hooks:
            return False
        return (x.device.type == "cpu" and x.dim() == 4 and x.shape[-2] * x.shape[-1] >= MIN_POSITIONS
                and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv) x 2 + identity. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features)
        self.norm2 = nn.BatchNorm2d(in_features)

    def forward(self, x: Tensor) -> Tensor:
        # In place where autograd allows it and the official code does (`out += x`): the ReLUs act on BatchNorm's
        # fresh output (BN's backward keeps its input), the residual add on conv2's fresh output (conv's backward
        # keeps its input): the same values, fewer (B, C, H, W) allocations and passes.
        out = self.conv1(F.relu(self.norm1(x), inplace=True))
        out = self.conv2(F.relu(self.norm2(out), inplace=True))
        return out.add_(x)


def _level_features(block_expansion: int, max_features: int, level: int) -> int:
    """Channel count of hourglass level ``level`` (level 0 = block_expansion), capped at max_features."""
    return min(max_features, block_expansion * 2**level)


class Encoder(nn.Module):
    """Hourglass encoder: ``num_blocks`` DownBlock2d; level i+1 has min(max, be * 2^(i+1)) channels.

    forward: (B, C_in, H, W) -> list of num_blocks + 1 maps, the input first, then (B, C_i, H/2^i, W/2^i).
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else _level_features(block_expansion, max_features, i),
                _level_features(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: UpBlock2d from the deepest level, concatenating the encoder skip after every block.

    forward: encoder outputs (list) -> (B, block_expansion + C_in, H, W). ``out_filters`` gives that channel count.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # Every level but the deepest receives [upsampled, skip] concatenated, hence twice the channels.
            in_filters = (1 if i == num_blocks - 1 else 2) * _level_features(block_expansion, max_features, i + 1)
            blocks.append(UpBlock2d(in_filters, _level_features(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, features: list[Tensor]) -> Tensor:
        skips = list(features)  # do not consume the caller's list
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style hourglass. (B, C_in, H, W) -> (B, block_expansion + C_in, H, W); H, W divisible by 2^num_blocks."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Band-limited downsampling: zero pad, depthwise Gaussian blur, keep every (1/scale)-th pixel.

    sigma = (1/scale - 1) / 2 and kernel size 2*round(4*sigma) + 1 (13x13 at scale 0.25). The kernel is a persistent
    buffer named ``weight`` because the official checkpoints contain it (``*.down.weight``).
    (B, C, H, W) -> (B, C, H*scale, W*scale).  The scale must be 1/n for a whole n: the official rule keeps every
    int(1/scale)-th pixel, so a scale of 0.75 would keep every pixel (the full-size map, barely blurred).  `name`:
    the setting the scale came from, for the error.
    """

    def __init__(self, channels: int, scale: float, name: str = "scale_factor"):
        super().__init__()
        if not 0 < scale <= 1 or abs(1 / scale - round(1 / scale)) > 1e-6:
            raise ValueError(f"{name} must be 1/n for a whole number n (1, 0.5, 0.25, ...), got {scale}: the "
                             f"downsampling keeps every n-th pixel")
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        mean = (kernel_size - 1) / 2
        # separable Gaussian, built as the outer product of the 1-D profiles and normalised to sum 1
        profile = torch.exp(-((torch.arange(kernel_size, dtype=torch.float32) - mean) ** 2) / (2 * sigma**2))
        kernel = profile[:, None] * profile[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone())
        self.groups = channels
        self.scale = scale
        self.step = round(1 / scale)  # = the official int(1 / scale) for every accepted 1/n, immune to 1/n rounding below n

    def forward(self, x: Tensor) -> Tensor:
        if self.scale == 1.0:
            return x
        x = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        # the stride keeps exactly the official x[:, :, ::step, ::step] of the full-resolution blur, bit for bit,
        # without computing the step**2 - 1 of every step**2 outputs it drops (64x fewer at scale 0.125)
        return F.conv2d(x, weight=self.weight.to(x.dtype), groups=self.groups, stride=self.step)
