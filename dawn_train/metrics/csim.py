"""CSIM: cosine similarity of ArcFace identity embeddings between the source image and generated frames.

Network and input scaling follow insightface `recognition/arcface_torch` (iresnet100, RGB,
(x / 255 - 0.5) / 0.5, 112x112). Per video the score is the mean over frames of
cos(f(source), f(frame)); the metric is the mean over videos (higher is better, 1 = same identity).

Deviation: ArcFace expects faces aligned by a 5-point similarity transform to the 112x112 template.
DAWN's outputs and sources are already square face crops (128 px), so we resize the whole crop to
112 (bilinear, no antialias, as `cv2.resize`). Scores are comparable between methods evaluated the
same way, not with numbers computed on aligned crops.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from dawn_train.metrics.frechet import quantize_8bit
from dawn_train.metrics.networks.arcface import ARCFACE_SIZE, LAYERS, IResNet
from dawn_train.metrics.weights import NetworkMetric, WeightSpec, load_weights

ARCFACE_WEIGHTS = WeightSpec(
    metric="CSIM",
    filename="backbone.pth",
    layout="torch state dict of arcface_torch iresnet100 (conv1, bn1, prelu, layer1..layer4 with 3/13/30/3 "
    "IBasicBlocks, bn2, fc 25088->512, features BatchNorm1d; 925 tensors)",
    source="insightface arcface_torch model zoo (recognition/arcface_torch/README.md), e.g. "
    "ms1mv3_arcface_r100_fp16/backbone.pth",
)


def arcface_input(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, 112, 112) in [-1, 1]."""
    x = quantize_8bit(images.float())
    if x.shape[-2:] != (ARCFACE_SIZE, ARCFACE_SIZE):
        x = F.interpolate(x, size=(ARCFACE_SIZE, ARCFACE_SIZE), mode="bilinear", align_corners=False,
                          antialias=False)
    return (x - 0.5) / 0.5


class CSIM(NetworkMetric):
    """Identity similarity between a source image and every generated frame.

    Args:
        weights: path to arcface_torch iresnet100 `backbone.pth` (missing -> `MetricUnavailable`).
        arch: "r100" (default, as talking-head papers use) or the smaller released "r50"/"r34"/"r18".
        chunk: frames per network call.

    update(source, videos): source (B, 3, H, W) and videos (B, T, 3, H, W), RGB float in [0, 1].
    compute(): scalar float64 tensor, mean over videos of the mean frame similarity.
    """

    higher_is_better = True

    def __init__(self, weights: str | Path | None, *, arch: str = "r100", chunk: int = 64, **kwargs):
        if arch not in LAYERS:
            raise ValueError(f"arch must be one of {tuple(LAYERS)}, got {arch!r}")
        net = IResNet(LAYERS[arch])
        report = load_weights(net, weights, ARCFACE_WEIGHTS)
        super().__init__(net, **kwargs)
        self.weight_report, self.chunk = report, chunk
        self.add_state("sim_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 512) unit-norm embeddings."""
        feats = torch.cat([self.net(arcface_input(part)) for part in images.split(self.chunk)])
        return F.normalize(feats.float(), dim=-1)

    def update(self, source: Tensor, videos: Tensor) -> None:
        if source.ndim != 4 or videos.ndim != 5 or source.shape[0] != videos.shape[0]:
            raise ValueError(f"expected source (B, 3, H, W) and videos (B, T, 3, H, W), got "
                             f"{tuple(source.shape)} and {tuple(videos.shape)}")
        ref = self.embed(source)  # (B, D)
        frames = self.embed(rearrange(videos, "b t c h w -> (b t) c h w"))
        frames = rearrange(frames, "(b t) d -> b t d", b=videos.shape[0])
        per_video = torch.einsum("btd,bd->bt", frames, ref).mean(1)  # (B,)
        self._add(per_video)

    def _add(self, per_video: Tensor) -> None:
        """Add (B,) per-video mean similarities."""
        self.sim_sum += per_video.double().sum().to(self.sim_sum.device)
        self.n += per_video.numel()

    def compute(self) -> Tensor:
        return self.sim_sum / self.n.clamp(min=1)
