"""VGG19 feature pyramid for the LFG perceptual loss, and the anti-aliased image pyramid it is applied to.

``Vgg19Features`` rebuilds the first 30 layers of torchvision's ``vgg19().features`` (up to relu5_1) under the same
names (``features.0.weight`` ...), without importing torchvision. ``load_torchvision_state_dict`` takes a full
torchvision VGG19 state dict (ImageNet weights) and loads the layers we use strictly.
Official counterpart: ``LFG/modules/model.py:Vgg19`` / ``ImagePyramide``.
"""
from __future__ import annotations

from copy import deepcopy

import torch
from torch import Tensor, nn

from .blocks import AntiAliasInterpolation2d
from .conv import Conv2d
from .pooling import MaxPool2d

# torchvision cfg "E" up to conv5_1: channel counts, "M" = 2x2 max-pool
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# exclusive end index in `features` of each returned slice: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
SLICE_ENDS = (2, 7, 12, 21, 30)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Vgg19Features(nn.Module):
    """Frozen VGG19 (ImageNet-normalised input) returning 5 activations.

    forward: (B, 3, H, W) in [0, 1] -> [relu1_1 (B, 64, H, W), relu2_1 (B, 128, H/2, W/2), relu3_1 (B, 256, H/4, W/4),
    relu4_1 (B, 512, H/8, W/8), relu5_1 (B, 512, H/16, W/16)].
    Weights start random; load ImageNet weights with ``load_torchvision_state_dict``.
    """

    def __init__(self, requires_grad: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(MaxPool2d(kernel_size=2, stride=2))
            else:
                # in-place ReLU as torchvision's (and the official's): the conv before it does not keep its output,
                # and every returned activation is followed by a conv, never modified afterwards
                layers += [Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        assert len(self.features) == SLICE_ENDS[-1]
        # non-persistent: the official model stored them as frozen Parameters, torchvision files do not have them
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(requires_grad)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # ImageNet normalisation
        device = x.device.type
        if not torch.is_autocast_enabled(device) or any(p.requires_grad for p in self.parameters()):
            return self._features(x)
        # frozen, under autocast (bf16-mixed): autocast casts weights that need no grad again at every call (its
        # cache keeps trainable ones only): 6-8 calls per LFG step x 13 M weights, ~20 % of a bf16 step at 64 px.
        # One copy in the autocast dtype instead, made once (and again if the weights change).
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return self._copy_in(dtype)._features(x.to(dtype))

    def _copy_in(self, dtype: torch.dtype) -> "Vgg19Features":
        weight = self.features[0].weight
        key = (dtype, weight.device, weight.data_ptr(), weight._version)
        cached = self.__dict__.get("_cast_copy")  # outside the module tree: not in state_dict, not moved by .to()
        if cached is None or cached[0] != key:
            self.__dict__.pop("_cast_copy", None)
            copy = deepcopy(self).to(dtype)  # not a new Vgg19Features(): its random init would use the global RNG
            self.__dict__["_cast_copy"] = cached = (key, copy)
        return cached[1]

    def _features(self, x: Tensor) -> list[Tensor]:
        """The 5 activations of a normalised image."""
        outs, start = [], 0
        for end in SLICE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs

    def load_torchvision_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load a torchvision ``vgg19`` state dict (``features.N.*`` and ``classifier.*``), e.g. the local copy of
        ``vgg19-dcbb9e9d.pth``. Keys of layers past relu5_1 and the classifier are dropped explicitly; every key we
        need must be present with the right shape (strict load), anything else raises."""
        ours = set(self.state_dict())
        extra = [k for k in state_dict if k not in ours]
        unexpected = [k for k in extra
                      if not (k.startswith("classifier.") or
                              (k.startswith("features.") and int(k.split(".")[1]) >= SLICE_ENDS[-1]))]
        if unexpected:
            raise ValueError(f"not a torchvision vgg19 state dict, unexpected keys: {unexpected[:5]}")
        self.load_state_dict({k: v for k, v in state_dict.items() if k in ours}, strict=True)


class ImagePyramid(nn.Module):
    """Anti-aliased multi-scale copies of an image: (B, C, H, W) -> [(B, C, H*s, W*s) for s in scales].

    A list in the order of `scales`, not a dict keyed by float scales: DeepSpeed ZeRO-3's forward
    hooks walk module outputs and expect string keys.

    The Gaussian kernels are non-persistent buffers (they are deterministic and in no checkpoint).
    """

    def __init__(self, scales: tuple[float, ...] | list[float] = (1.0, 0.5, 0.25, 0.125), num_channels: int = 3):
        super().__init__()
        self.scales = tuple(float(s) for s in scales)
        self.downs = nn.ModuleList(AntiAliasInterpolation2d(num_channels, s, "each of scales") for s in self.scales)
        for down in self.downs:
            kernel = down.weight
            del down.weight
            down.register_buffer("weight", kernel, persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [down(x) for down in self.downs]
