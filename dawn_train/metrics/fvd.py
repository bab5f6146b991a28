"""FVD16 / FVD32: Frechet distance between I3D (Kinetics-400) features of 16- or 32-frame clips.

Preprocessing is the one shared by VideoGPT's `fvd.py` and StyleGAN-V's FVD port
(`frechet_video_distance.py`, `common_metrics_on_video_quality/fvd/{videogpt,styleganv}`):
8-bit frames -> scale the shorter side to 224 (bilinear, align_corners=False, no antialias) ->
centre crop 224x224 -> [0, 1] to [-1, 1] -> (B, 3, T, 224, 224). The feature is the 400-d
pre-softmax logit vector averaged over time.

Two detectors:
- `detector="i3d"` (default): our `InceptionI3d` loading `i3d_pretrained_400.pt` (piergiaj layout,
  VideoGPT's port) strictly.
- `detector="torchscript"`: StyleGAN-V's `i3d_torchscript.pt` (a TorchScript export of the TF-hub
  `i3d-kinetics-400` module used by the original TF FVD), called as
  `net(x, rescale=False, resize=False, return_features=True)` on our preprocessed clips. The two
  weight sets differ (StyleGAN-V: "the weights on tf.hub differ from the original released weights"),
  so numbers are comparable only within one detector; the TorchScript one matches the TF reference.

Clips: each video (T frames) gives clips of `clip_len` frames starting every `clip_stride` frames
(default `clip_len`, i.e. non-overlapping; 200 frames -> 12 clips of 16, 6 clips of 32). Every clip
is one sample. StyleGAN-V instead takes one clip per video at a random offset; with few videos the
non-overlapping clips give the covariance more samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dawn_train.metrics.frechet import FrechetMetric, quantize_8bit
from dawn_train.metrics.networks.i3d import I3D_SIZE, InceptionI3d
from dawn_train.metrics.weights import WeightReport, WeightSpec, load_weights, resolve, sha256_of

I3D_WEIGHTS = WeightSpec(
    metric="FVD",
    filename="i3d_pretrained_400.pt",
    layout="torch state dict of InceptionI3d(400) in piergiaj/pytorch-i3d names (Conv3d_1a_7x7.conv3d.weight, "
    "Mixed_3b.b1b.bn.running_mean, ..., logits.conv3d.weight (400, 1024, 1, 1, 1)); VideoGPT's FVD weights",
    source="VideoGPT (github.com/wilson1yan/VideoGPT, videogpt/fvd: Google Drive id "
    "1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT) or the mirror named in JunyaoHu/common_metrics_on_video_quality",
)
TORCHSCRIPT_WEIGHTS = WeightSpec(
    metric="FVD",
    filename="i3d_torchscript.pt",
    layout="TorchScript module from StyleGAN-V taking (B, 3, T, H, W) and keyword args rescale/resize/"
    "return_features",
    source="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt (StyleGAN-V, "
    "src/metrics/frechet_video_distance.py)",
)
DETECTORS = ("i3d", "torchscript")


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D; input already resized and scaled to [-1, 1]."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.model = torch.jit.load(str(path), map_location="cpu")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, rescale=False, resize=False, return_features=True)


def preprocess_clips(clips: Tensor, size: int = I3D_SIZE) -> Tensor:
    """(N, T, 3, H, W) in [0, 1] -> (N, 3, T, size, size) in [-1, 1] (shorter side to `size`, centre crop)."""
    n, t, _, h, w = clips.shape
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    x = rearrange(clips, "n t c h w -> (n t) c h w")
    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=False)
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return rearrange((x - 0.5) * 2, "(n t) c h w -> n c t h w", n=n, t=t)


def split_clips(videos: Tensor, clip_len: int, stride: int) -> Tensor:
    """(B, T, 3, H, W) -> (B * K, clip_len, 3, H, W), K clips starting every `stride` frames."""
    if videos.ndim != 5 or videos.shape[1] < clip_len:
        raise ValueError(f"expected (B, T >= {clip_len}, 3, H, W) videos, got {tuple(videos.shape)}")
    clips = videos.unfold(1, clip_len, stride)  # (B, K, 3, H, W, clip_len)
    return rearrange(clips, "b k c h w t -> (b k) t c h w")


class FVD(FrechetMetric):
    """Frechet Video Distance on `clip_len`-frame clips (16 -> FVD16, 32 -> FVD32).

    Args:
        weights: path to `i3d_pretrained_400.pt` (detector "i3d") or `i3d_torchscript.pt`
            (detector "torchscript"); missing -> `MetricUnavailable`.
        clip_len, clip_stride: clip length and start spacing in frames (stride defaults to clip_len).
        bn_eps: I3D BatchNorm eps (1e-5 VideoGPT's port, 1e-3 piergiaj's original).
        quantize: round inputs to 8-bit levels first. chunk: clips per network call.

    update(videos, real): videos (B, T, 3, H, W) RGB float in [0, 1], T >= clip_len, 25 fps.
    compute(): scalar float64 tensor (lower is better).
    """

    def __init__(self, weights: str | Path | None, *, clip_len: int = 16, clip_stride: int | None = None,
                 detector: str = "i3d", bn_eps: float = 1e-5, quantize: bool = True, chunk: int = 4, **kwargs):
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
        if clip_len < 9:
            raise ValueError(f"I3D needs clips of at least 9 frames, got clip_len={clip_len}")
        if detector == "i3d":
            net = InceptionI3d(400, bn_eps=bn_eps)
            report = load_weights(net, weights, I3D_WEIGHTS)
        else:
            path = resolve(weights, TORCHSCRIPT_WEIGHTS)
            net = TorchScriptI3D(path)
            report = WeightReport(str(path), sha256_of(path), None, len(net.state_dict()), ())
        super().__init__(net, num_features=400, **kwargs)
        self.weight_report = report
        self.clip_len, self.clip_stride = clip_len, clip_stride or clip_len
        self.quantize, self.chunk = quantize, chunk

    def extract(self, videos: Tensor) -> Tensor:
        clips = split_clips(videos.float(), self.clip_len, self.clip_stride)
        if self.quantize:
            clips = quantize_8bit(clips)
        return torch.cat([self.net(preprocess_clips(part)).float() for part in clips.split(self.chunk)])
