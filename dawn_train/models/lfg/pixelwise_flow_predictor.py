"""Dense motion from region parameters: K+1 sparse motions (background first) blended by a predicted soft mask.

Official counterpart: ``LFG/modules/pixelwise_flow_predictor.py:PixelwiseFlowPredictor``; attribute names match.
Region parameters are dicts as returned by ``RegionPredictor``: ``shift`` (B, K, 2), ``covar`` (B, K, 2, 2) and
optionally ``affine`` (B, K, 2, 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from ..precision import float32_under_autocast
from .blocks import (
    AntiAliasInterpolation2d,
    Hourglass,
    from_homogeneous,
    make_coordinate_grid,
    region_to_gaussian,
    to_homogeneous,
)


def compose_region_affines(source_affine: Tensor, driving_affine: Tensor, revert_axis_swap: bool) -> Tensor:
    """A_src @ A_drv^-1 per region, (B, K, 2, 2) each.

    ``revert_axis_swap`` multiplies the whole product by the sign of its [0, 0] entry: the SVD fixes each region's axes
    only up to a sign, and a flip in just one of the two frames would otherwise mirror the region. The inverse runs in
    float32 as in the official code (it is ill-conditioned in half precision).
    """
    affine = torch.matmul(source_affine.float(), torch.inverse(driving_affine.float()))
    if revert_axis_swap:
        affine = affine * torch.sign(affine[..., 0:1, 0:1])
    return affine


class PixelwiseFlowPredictor(nn.Module):
    """Predict a dense backward flow and an occlusion map from source/driving region parameters.

    Args mirror the official ``pixelwise_flow_predictor_params`` (defaults: DAWN release config); ``num_regions``,
    ``num_channels`` and ``revert_axis_swap`` come from the top-level model params. ``region_var`` is the isotropic
    heatmap variance used when ``use_covar_heatmap=False``.
    """

    def __init__(
        self,
        num_regions: int = 10,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 1024,
        num_blocks: int = 5,
        estimate_occlusion_map: bool = True,
        scale_factor: float = 0.25,
        region_var: float = 0.01,
        use_covar_heatmap: bool = True,
        use_deformed_source: bool = True,
        revert_axis_swap: bool = True,
    ):
        super().__init__()
        # per motion: 1 heatmap channel (+ the deformed source image)
        in_features = (num_regions + 1) * (num_channels * int(use_deformed_source) + 1)
        self.hourglass = Hourglass(block_expansion, in_features=in_features, max_features=max_features,
                                   num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_regions + 1, kernel_size=7, padding=3)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
                          if estimate_occlusion_map else None)
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, "pixelwise_flow_predictor_params.scale_factor")
        self.num_regions = num_regions
        self.scale_factor = scale_factor
        self.region_var = region_var
        self.use_covar_heatmap = use_covar_heatmap
        self.use_deformed_source = use_deformed_source
        self.revert_axis_swap = revert_axis_swap

    def create_heatmap_representations(self, source_image: Tensor, driving_region_params: dict,
                                       source_region_params: dict) -> Tensor:
        """Gaussian(driving) - Gaussian(source) per region (eq. 6 of MRAA), zero background channel first.

        source_image: (B, C, h, w) only sets the size. Returns (B, K+1, 1, h, w).
        """
        h, w = source_image.shape[2:]
        gaussians = []
        for params in (driving_region_params, source_region_params):
            covar = params["covar"] if self.use_covar_heatmap else self.region_var
            gaussians.append(region_to_gaussian(params["shift"], covar, h, w))  # (B, K, h, w)
        heatmap = gaussians[0] - gaussians[1]
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], dim=1)
        return heatmap[:, :, None]

    def create_sparse_motions(self, source_image: Tensor, driving_region_params: dict, source_region_params: dict,
                              bg_params: Tensor | None = None) -> Tensor:
        """Per-motion backward grids: background (bg_params applied to the identity grid), then for region k
        A_src,k A_drv,k^-1 (z - mu_drv,k) + mu_src,k. source_image: (B, C, h, w) only sets the size;
        bg_params: (B, 3, 3) or None (identity). Returns (B, K+1, h, w, 2), last dim (x, y).
        """
        b, _, h, w = source_image.shape
        src_shift, drv_shift = source_region_params["shift"], driving_region_params["shift"]
        grid = make_coordinate_grid(h, w, device=src_shift.device, dtype=src_shift.dtype)  # (h, w, 2)
        coords = grid - drv_shift[:, :, None, None, :]  # (B, K, h, w, 2)
        if "affine" in driving_region_params:
            affine = compose_region_affines(source_region_params["affine"], driving_region_params["affine"],
                                            self.revert_axis_swap).to(coords.dtype)
            coords = torch.matmul(affine[:, :, None, None], coords[..., None])[..., 0]
        driving_to_source = coords + src_shift[:, :, None, None, :]

        bg_grid = repeat(grid, "h w c -> b 1 h w c", b=b)
        if bg_params is not None:
            bg_grid = torch.matmul(bg_params[:, None, None, None].to(grid.dtype), to_homogeneous(bg_grid)[..., None])
            bg_grid = from_homogeneous(bg_grid[..., 0])
        return torch.cat([bg_grid, driving_to_source], dim=1)

    def create_deformed_source_image(self, source_image: Tensor, sparse_motions: Tensor) -> Tensor:
        """Warp the source with every sparse motion. (B, C, h, w), (B, K+1, h, w, 2) -> (B, K+1, C, h, w)."""
        n = sparse_motions.shape[1]
        source = repeat(source_image, "b c h w -> (b n) c h w", n=n)
        grids = rearrange(sparse_motions, "b n h w c -> (b n) h w c").to(source.dtype)
        deformed = F.grid_sample(source, grids, align_corners=False)
        return rearrange(deformed, "(b n) c h w -> b n c h w", n=n)

    @float32_under_autocast  # the flow is a softmax-weighted mix of region motions: coordinates (models/precision.py)
    def forward(self, source_image: Tensor, driving_region_params: dict, source_region_params: dict,
                bg_params: Tensor | None = None) -> dict[str, Tensor]:
        """source_image: (B, C, H, W) in [0, 1]; region params of both frames; bg_params (B, 3, 3) or None.

        Returns ``optical_flow`` (B, h, w, 2) absolute grid in [-1, 1] (h, w = H, W times scale_factor) and, if
        estimated, ``occlusion_map`` (B, 1, h, w) in (0, 1).
        """
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        heatmap = self.create_heatmap_representations(source_image, driving_region_params, source_region_params)
        sparse_motions = self.create_sparse_motions(source_image, driving_region_params, source_region_params,
                                                    bg_params=bg_params)
        if self.use_deformed_source:
            deformed = self.create_deformed_source_image(source_image, sparse_motions)
            predictor_input = torch.cat([heatmap.to(deformed.dtype), deformed], dim=2)  # (B, K+1, 1+C, h, w)
        else:
            predictor_input = heatmap
        prediction = self.hourglass(rearrange(predictor_input, "b n c h w -> b (n c) h w"))

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, h, w), background first
        flow = torch.einsum("bnhw,bnhwc->bhwc", mask.to(sparse_motions.dtype), sparse_motions)
        out = {"optical_flow": flow}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out
