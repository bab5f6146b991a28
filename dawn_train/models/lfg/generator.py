"""LFG generator: encodes the source image, warps its features with the predicted flow and decodes the driving frame.

Official counterpart: ``LFG/modules/generator.py:Generator`` (Johnson-style encoder / residual bottleneck / decoder);
attribute names match its state dict. ``forward_with_flow`` is the decoder A2V-FDM uses at inference time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, warp
from .pixelwise_flow_predictor import PixelwiseFlowPredictor


class Generator(nn.Module):
    """Source image + motion -> driving frame.

    Args mirror the official ``generator_params`` (defaults: DAWN release config): ``block_expansion`` channels after
    the 7x7 stem, doubled by each of ``num_down_blocks`` (capped at ``max_features``); ``num_bottleneck_blocks``
    ResBlocks; ``skips`` blends warped encoder features into every decoder level; ``pixelwise_flow_predictor_params``
    are keyword args of ``PixelwiseFlowPredictor`` (None: no flow predictor, the generator then only auto-encodes).
    """

    def __init__(
        self,
        num_channels: int = 3,
        num_regions: int = 10,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        pixelwise_flow_predictor_params: dict | None = None,
        skips: bool = True,
        revert_axis_swap: bool = True,
    ):
        super().__init__()
        if pixelwise_flow_predictor_params is not None:
            self.pixelwise_flow_predictor = PixelwiseFlowPredictor(
                num_regions=num_regions, num_channels=num_channels, revert_axis_swap=revert_axis_swap,
                **pixelwise_flow_predictor_params)
        else:
            self.pixelwise_flow_predictor = None

        def features(level: int) -> int:
            return min(max_features, block_expansion * 2**level)

        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(DownBlock2d(features(i), features(i + 1)) for i in range(num_down_blocks))
        self.up_blocks = nn.ModuleList(
            UpBlock2d(features(num_down_blocks - i), features(num_down_blocks - i - 1)) for i in range(num_down_blocks))
        # Sequential with names r0, r1, ... as in the official state dict
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(features(num_down_blocks)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.num_channels = num_channels
        self.skips = skips

    # -- pieces ---------------------------------------------------------------------------------------------------

    def encode_source(self, source_image: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> encoder features, finest first: [(B, be, H, W), ..., (B, C_bottleneck, H/2^n, W/2^n)]."""
        feats = [self.first(source_image)]
        for block in self.down_blocks:
            feats.append(block(feats[-1]))
        return feats

    @staticmethod
    def apply_optical(skip: Tensor, previous: Tensor | None, optical_flow: Tensor | None,
                      occlusion_map: Tensor | None) -> Tensor:
        """Warp ``skip`` (B, C, H, W) by the flow (B, h, w, 2) and blend with ``previous`` through the occlusion map
        (B, 1, h, w) (both resized bilinearly): warp(skip) * occ + previous * (1 - occ). Without previous: masked warp.
        Without a flow, returns previous if given, else skip (official behaviour of the flow-free generator)."""
        if optical_flow is None:
            return previous if previous is not None else skip
        out = warp(skip, optical_flow)
        if occlusion_map is None:
            return out
        if occlusion_map.shape[2:] != out.shape[2:]:
            occlusion_map = F.interpolate(occlusion_map, size=out.shape[2:], mode="bilinear")
        if previous is None:
            return out * occlusion_map
        return out * occlusion_map + previous * (1 - occlusion_map)

    def decode_features(self, source_image: Tensor, feats: list[Tensor], optical_flow: Tensor | None,
                        occlusion_map: Tensor | None) -> Tensor:
        """Warp the source features, run the bottleneck and the decoder. Returns the frame (B, C, H, W) in [0, 1]."""
        return self._decode(source_image, feats, optical_flow, occlusion_map)[0]

    def _decode(self, source_image: Tensor, feats: list[Tensor], optical_flow: Tensor | None,
                occlusion_map: Tensor | None) -> tuple[Tensor, Tensor]:
        """(frame, decoded): the frame and the decoder's own image before the last blend with the warped source
        (the same tensor without skips), both (B, C, H, W) in [0, 1]."""
        out = self.apply_optical(feats[-1], None, optical_flow, occlusion_map)
        out = self.bottleneck(out)
        for i, block in enumerate(self.up_blocks):
            if self.skips:
                out = self.apply_optical(feats[-(i + 1)], out, optical_flow, occlusion_map)
            out = block(out)
        if self.skips:
            out = self.apply_optical(feats[0], out, optical_flow, occlusion_map)
        decoded = torch.sigmoid(self.final(out))
        out = decoded
        if self.skips:
            # the last blend is with the warped source image itself, at full resolution
            out = self.apply_optical(source_image, decoded, optical_flow, occlusion_map)
        return out, decoded

    # -- official entry points ------------------------------------------------------------------------------------

    def forward(self, source_image: Tensor, driving_region_params: dict, source_region_params: dict,
                bg_params: Tensor | None = None, occlusion_mask: Tensor | None = None) -> dict[str, Tensor]:
        """source_image (B, C, H, W) in [0, 1]; region params of driving and source; bg_params (B, 3, 3);
        occlusion_mask (B, 1, m, n), any size (resized, nearest): multiplies the occlusion map before decoding, a
        training regulariser that cuts holes the decoder must fill (``LFGStage.occlusion_dropout``).

        Returns ``prediction`` (B, C, H, W), ``bottle_neck_feat`` (B, C_b, H/2^n, W/2^n) and, with a flow predictor,
        ``optical_flow`` (B, h, w, 2), ``occlusion_map`` (B, 1, h, w), ``deformed`` (B, C, H, W) = warped source.
        """
        feats = self.encode_source(source_image)
        out = {"bottle_neck_feat": feats[-1]}
        flow = occlusion = None
        if self.pixelwise_flow_predictor is not None:
            motion = self.pixelwise_flow_predictor(source_image, driving_region_params, source_region_params,
                                                   bg_params=bg_params)
            flow, occlusion = motion["optical_flow"], motion.get("occlusion_map")
            out["deformed"] = warp(source_image, flow)
            out["optical_flow"] = flow
            if occlusion is not None:
                out["occlusion_map"] = occlusion
                if occlusion_mask is not None:  # the logged map stays the predicted one
                    occlusion = occlusion * F.interpolate(occlusion_mask.to(occlusion.dtype), size=occlusion.shape[2:],
                                                          mode="nearest")
        out["prediction"], out["decoded"] = self._decode(source_image, feats, flow, occlusion)
        return out

    def compute_fea(self, source_image: Tensor) -> Tensor:
        """Bottleneck feature of the source, (B, C, H, W) -> (B, C_b, H/2^n, W/2^n); A2V-FDM's reference feature."""
        return self.encode_source(source_image)[-1]

    def forward_with_flow(self, source_image: Tensor, optical_flow: Tensor,
                          occlusion_map: Tensor | None) -> dict[str, Tensor]:
        """Decode with a given flow (B, h, w, 2) and occlusion (B, 1, h, w) instead of region parameters.

        Returns ``prediction`` (B, C, H, W) and ``deformed`` (B, C, H, W).
        """
        feats = self.encode_source(source_image)
        return {
            "deformed": warp(source_image, optical_flow),
            "prediction": self.decode_features(source_image, feats, optical_flow, occlusion_map),
        }
