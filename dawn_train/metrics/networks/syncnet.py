"""SyncNet (Chung & Zisserman, "Out of time", ACCV-W 2016) as released in joonson/syncnet_python.

The class mirrors `SyncNetModel.S`: four `nn.Sequential` towers whose indices give the names in
`syncnet_v2.model` (`netcnnaud.0.weight`, `netfcaud.1.running_var`, `netcnnlip.18.weight`, ...).
Activations and pools keep their slots so that indices match.

Inputs, exactly as syncnet_python feeds them:
- lip tower: (N, 3, 5, 224, 224) five consecutive face crops, **BGR** (cv2.imread), float in
  [0, 255], no mean/std normalisation;
- audio tower: (N, 1, 13, 20) MFCC (python_speech_features defaults, see `metrics/sync.py`) of the
  20 MFCC frames (100 Hz) that cover the same 0.2 s.
Both return (N, 1024) embeddings compared by Euclidean distance.
"""
from __future__ import annotations

from torch import Tensor, nn


def _audio_tower() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(1, 1),  # 0-3
        nn.Conv2d(64, 192, 3, 1, 1), nn.BatchNorm2d(192), nn.ReLU(True), nn.MaxPool2d(3, (1, 2)),  # 4-7
        nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384), nn.ReLU(True),  # 8-10
        nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(True),  # 11-13
        nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(True), nn.MaxPool2d(3, 2),  # 14-17
        nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512), nn.ReLU(),  # 18-20: (N, 512, 1, 1)
    )


def _lip_tower() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), nn.BatchNorm3d(96), nn.ReLU(True),  # 0-2
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 3
        nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(True),  # 4-6
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 7
        nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(True),  # 8-10
        nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(True),  # 11-13
        nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(True),  # 14-16
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 17
        nn.Conv3d(256, 512, (1, 6, 6)), nn.BatchNorm3d(512), nn.ReLU(True),  # 18-20: (N, 512, 1, 1, 1)
    )


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """syncnet_python `S(num_layers_in_fc_layers=1024)`."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = _audio_tower()
        self.netfcaud = _head(embed_dim)
        self.netfclip = _head(embed_dim)
        self.netcnnlip = _lip_tower()

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        """mfcc: (N, 1, 13, 20) -> (N, D)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: Tensor) -> Tensor:
        """frames: (N, 3, 5, 224, 224) BGR in [0, 255] -> (N, D)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))
