"""Background motion predictor: one global 3x3 transform per (source, driving) pair.

Official counterpart: ``LFG/modules/bg_motion_predictor.py:BGMotionPredictor``; attribute names match its state dict.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..precision import float32_under_autocast
from .blocks import Encoder

# bg_type -> (number of regressed values, their identity values); the fc layer starts at the identity transform
_BG_TYPES = {
    "zero": (0, []),
    "shift": (2, [0.0, 0.0]),
    "affine": (6, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    "perspective": (8, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
}


class BGMotionPredictor(nn.Module):
    """Encoder over concat(source, driving) -> spatial mean of the deepest feature -> Linear -> 3x3 matrix.

    Args mirror the official ``bg_predictor_params`` (defaults: DAWN release config). ``bg_type`` is one of
    'zero' (identity, no weights), 'shift', 'affine' (DAWN), 'perspective'.
    """

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        bg_type: str = "affine",
    ):
        super().__init__()
        if bg_type not in _BG_TYPES:
            raise ValueError(f"bg_type must be one of {sorted(_BG_TYPES)}, got {bg_type!r}")
        self.bg_type = bg_type
        num_outputs, identity = _BG_TYPES[bg_type]
        if num_outputs:
            self.encoder = Encoder(block_expansion, in_features=num_channels * 2, max_features=max_features,
                                   num_blocks=num_blocks)
            self.fc = nn.Linear(min(max_features, block_expansion * 2**num_blocks), num_outputs)
            nn.init.zeros_(self.fc.weight)
            with torch.no_grad():
                self.fc.bias.copy_(torch.tensor(identity))

    @float32_under_autocast  # a global transform of coordinates (models/precision.py)
    def forward(self, source_image: Tensor, driving_image: Tensor) -> Tensor:
        """source_image, driving_image: (B, C, H, W). Returns (B, 3, 3), last row [0, 0, 1] except for perspective."""
        b = source_image.shape[0]
        eye = torch.eye(3, device=source_image.device, dtype=source_image.dtype).expand(b, 3, 3)
        if self.bg_type == "zero":
            return eye.clone()
        feature = self.encoder(torch.cat([source_image, driving_image], dim=1))[-1].mean(dim=(2, 3))
        p = self.fc(feature)  # (B, n)
        if self.bg_type == "shift":
            top = torch.cat([eye[:, :2, :2], p[:, :, None]], dim=2)
            return torch.cat([top, eye[:, 2:]], dim=1)
        top = p[:, :6].reshape(b, 2, 3)
        if self.bg_type == "affine":
            return torch.cat([top, eye[:, 2:]], dim=1)
        bottom = torch.cat([p[:, None, 6:], eye[:, 2:, 2:]], dim=2)  # perspective row [p6, p7, 1]
        return torch.cat([top, bottom], dim=1)
