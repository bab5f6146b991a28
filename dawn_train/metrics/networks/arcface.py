"""ArcFace IResNet (Deng et al., CVPR 2019) in insightface `recognition/arcface_torch` layout.

Names match `backbones/iresnet.py`, so arcface_torch's released `backbone.pth` (e.g. ms1mv3_arcface_r100_fp16)
loads strictly: `conv1`, `bn1`, `prelu`, `layer1..4.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0/1}`,
`bn2`, `fc` (25088 -> 512), `features` (BatchNorm1d). Dropout is 0 at inference.

Input: (B, 3, 112, 112) aligned face, RGB, scaled as arcface_torch's `inference.py` does:
x / 255 -> (x - 0.5) / 0.5, i.e. [-1, 1]. Output: (B, 512) embedding (not normalised).
"""
from __future__ import annotations

from torch import Tensor, nn

ARCFACE_SIZE = 112
LAYERS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus identity or 1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.conv1 = conv3x3(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = conv3x3(c_out, c_out, stride)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out, eps=1e-5))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """x: (B, 3, 112, 112) in [-1, 1] -> (B, num_features)."""

    def __init__(self, layers: tuple[int, ...] = LAYERS["r100"], num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        c_in = 64
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = [IBasicBlock(c_in, width, stride=2)] + [IBasicBlock(width, width) for _ in range(depth - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c_in = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        return self.features(self.fc(self.bn2(x).flatten(1)))


def iresnet100(num_features: int = 512) -> IResNet:
    return IResNet(LAYERS["r100"], num_features)
