"""FID: Frechet distance between InceptionV3 pool3 (2048-d) features of real and generated frames.

Follows mseitzer/pytorch-fid: TF-ported `pt_inception-2015-12-05` weights, bilinear resize to 299
without antialiasing, [0, 1] -> [-1, 1], float64 statistics and `frechet_distance`. Every frame of
every video is one sample (as in talking-head papers that report per-frame FID).
"""
from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from dawn_train.metrics.frechet import FrechetMetric, quantize_8bit
from dawn_train.metrics.networks.inception import FIDInceptionV3
from dawn_train.metrics.weights import WeightSpec, load_weights

FID_WEIGHTS = WeightSpec(
    metric="FID",
    filename="pt_inception-2015-12-05-6726825d.pth",
    layout="torch state dict of pytorch-fid's FID InceptionV3 (torchvision Inception3 names, "
    "Conv2d_1a_3x3 ... Mixed_7c, fc 2048->1008, no AuxLogits; 566 tensors with BatchNorm counters)",
    source="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d",
)


def frames_of(x: Tensor) -> Tensor:
    """(B, T, 3, H, W) videos or (B, 3, H, W) images -> (N, 3, H, W) frames."""
    if x.ndim == 5:
        return rearrange(x, "b t c h w -> (b t) c h w")
    if x.ndim == 4:
        return x
    raise ValueError(f"expected (B, T, 3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")


class FID(FrechetMetric):
    """Frechet Inception Distance.

    Args:
        weights: path to `pt_inception-2015-12-05-6726825d.pth` (missing -> `MetricUnavailable`).
        quantize: round inputs to 8-bit levels first, as pytorch-fid sees images read from files.
        chunk: frames per network call.

    update(x, real): x (B, T, 3, H, W) videos or (B, 3, H, W) images, RGB float in [0, 1], any size.
    compute(): scalar float64 tensor (lower is better).
    """

    def __init__(self, weights: str | Path | None, *, quantize: bool = True, chunk: int = 64, **kwargs):
        net = FIDInceptionV3()
        report = load_weights(net, weights, FID_WEIGHTS)
        super().__init__(net, num_features=2048, **kwargs)
        self.weight_report = report
        self.quantize, self.chunk = quantize, chunk

    def extract(self, x: Tensor) -> Tensor:
        frames = frames_of(x).float()
        if self.quantize:
            frames = quantize_8bit(frames)
        return torch.cat([self.net(part) for part in frames.split(self.chunk)])
