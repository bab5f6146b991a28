"""Region predictor (MRAA): K soft region heatmaps -> centre, covariance and a 2x2 affine per region.

Official counterpart: ``LFG/modules/region_predictor.py:RegionPredictor``; attribute names match its state dict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..precision import float32_under_autocast
from .blocks import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid


def symmetric_eig2x2(covar: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form SVD of symmetric positive semi-definite 2x2 matrices, batched on the input's device.

    covar: (..., 2, 2). Returns ``u`` (..., 2, 2) (columns = singular vectors, largest first) and ``s`` (..., 2)
    (singular values, descending), so that covar = u @ diag(s) @ u^T.

    Sign convention: the structure CPU LAPACK (``torch.svd`` / ``torch.linalg.svd``) gives these matrices in every
    case we sampled: ``u`` is a reflection (det = -1, u = [[x, y], [y, -x]]). We additionally fix x = u[0, 0] <= 0,
    which agrees with LAPACK whenever covar[0, 1] < 0 and in most other cases (~88 % of random covariances). The two
    conventions can then differ only by the sign of the whole matrix ``u`` of a region; the flow does not see that,
    because ``revert_axis_swap`` multiplies the composed A_src @ A_drv^-1 by the sign of its [0, 0] entry. With
    ``revert_axis_swap=False`` the relative sign of source and driving matters: use
    ``RegionPredictor(svd_on_cpu=True)`` to reproduce LAPACK exactly.

    Computed in float64 (tiny tensors), so the result is as accurate as the LAPACK one.
    """
    dtype = covar.dtype
    c = covar.double() if covar.device.type != "mps" else covar.float()  # MPS has no float64
    a, b, d = c[..., 0, 0], (c[..., 0, 1] + c[..., 1, 0]) / 2, c[..., 1, 1]
    half_trace, half_diff = (a + d) / 2, (a - d) / 2
    # radius of the eigenvalue circle; sqrt through `where` keeps the gradient finite (not NaN) for isotropic matrices
    radius_sq = half_diff**2 + b**2
    degenerate = radius_sq == 0
    radius = torch.where(degenerate, torch.zeros_like(radius_sq),
                         torch.where(degenerate, torch.ones_like(radius_sq), radius_sq).sqrt())
    s_max = half_trace + radius
    # the product form avoids cancellation for nearly rank-1 matrices; clamp for numerically negative determinants
    s_min = torch.where(s_max > 0, (a * d - b * b) / s_max.clamp_min(torch.finfo(c.dtype).tiny), torch.zeros_like(a))
    s_min = torch.minimum(s_min.clamp_min(0), s_max)
    # Principal axis angle; atan2(0, 0) has a NaN gradient, so isotropic matrices use the angle 0 (any axis is valid).
    theta = 0.5 * torch.atan2(torch.where(degenerate, torch.zeros_like(b), b),
                              torch.where(degenerate, torch.ones_like(half_diff), half_diff))
    cos, sin = torch.cos(theta), torch.sin(theta)  # cos >= 0 since theta in [-pi/2, pi/2]
    u = torch.stack([torch.stack([-cos, -sin], -1), torch.stack([-sin, cos], -1)], -2)
    return u.to(dtype), torch.stack([s_max, s_min], -1).to(dtype)


class RegionPredictor(nn.Module):
    """Predict K regions of an image: heatmaps and their first/second moments.

    Args mirror the official ``region_predictor_params`` (defaults: DAWN hdtf128/256 release config):
        num_regions: K. num_channels: image channels. block_expansion / max_features / num_blocks: hourglass size.
        temperature: softmax temperature of the heatmaps. scale_factor: the hourglass sees the image downsampled by it.
        estimate_affine: also return ``affine``. pca_based: affine = U sqrt(S) from the covariance (DAWN); otherwise a
        regressed jacobian (FOMM style, conv ``jacobian``). pad: padding of the 7x7 ``regions`` conv.
        fast_svd: accepted for official-config compatibility and ignored (our SVD is closed-form and batched already).
        svd_on_cpu: compute the SVD with LAPACK on CPU like the official code (bit-identical ``u``/``affine`` signs,
            but a device sync per call). Only needed with ``revert_axis_swap=False``.
    """

    def __init__(
        self,
        num_regions: int = 10,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        estimate_affine: bool = True,
        scale_factor: float = 0.25,
        pca_based: bool = True,
        fast_svd: bool = False,
        pad: int = 3,
        svd_on_cpu: bool = False,
    ):
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                   num_blocks=num_blocks)
        self.regions = nn.Conv2d(self.predictor.out_filters, num_regions, kernel_size=7, padding=pad)
        if estimate_affine and not pca_based:
            # FOMM-like regression, initialised to the identity jacobian
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4, kernel_size=7, padding=pad)
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))
        else:
            self.jacobian = None
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, "region_predictor_params.scale_factor")
        self.num_regions = num_regions
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.pca_based = pca_based
        self.svd_on_cpu = svd_on_cpu

    def heatmap_moments(self, heatmap: Tensor) -> dict[str, Tensor]:
        """heatmap (B, K, h, w), summing to 1 over (h, w) -> ``shift`` (B, K, 2) mean (x, y) and, when pca_based,
        ``covar`` (B, K, 2, 2) second central moment."""
        grid = make_coordinate_grid(*heatmap.shape[2:], device=heatmap.device, dtype=heatmap.dtype)
        weighted = heatmap[..., None]  # (B, K, h, w, 1)
        shift = (weighted * grid).sum(dim=(2, 3))
        params = {"shift": shift}
        if self.pca_based:
            centred = grid - shift[:, :, None, None, :]  # (B, K, h, w, 2)
            outer = centred[..., :, None] * centred[..., None, :]  # (B, K, h, w, 2, 2)
            params["covar"] = (outer * weighted[..., None]).sum(dim=(2, 3))
        return params

    def _svd(self, covar: Tensor) -> tuple[Tensor, Tensor]:
        if self.svd_on_cpu:
            u, s, _ = torch.linalg.svd(covar.float().cpu())
            return u.to(covar), s.to(covar)
        return symmetric_eig2x2(covar)

    # float32 under bf16-mixed (models/precision.py): the heatmaps are a softmax at temperature 0.1 and the shifts and
    # affines their moments; in bfloat16 this network's gradients point elsewhere (cosine 0.6-0.8 to float32's)
    @float32_under_autocast
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (B, C, H, W) image in [0, 1]. Returns a dict with (h, w = H, W times scale_factor):
        ``heatmap`` (B, K, h, w) softmax over space; ``shift`` (B, K, 2) centres (x, y) in [-1, 1];
        with pca_based: ``covar`` (B, K, 2, 2), ``affine`` (B, K, 2, 2) = u @ d, ``u`` (B, K, 2, 2) singular vectors,
        ``d`` (B, K, 2, 2) = diag(sqrt(s)) (the official code returns u, d flattened to (B*K, 2, 2));
        with the regression jacobian instead: ``affine`` and ``covar`` = affine @ affine^T.
        """
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        logits = self.regions(feature_map)  # (B, K, h, w)
        h, w = logits.shape[2:]
        heatmap = F.softmax(rearrange(logits, "b k h w -> b k (h w)") / self.temperature, dim=2)
        heatmap = rearrange(heatmap, "b k (h w) -> b k h w", h=h, w=w)

        params = self.heatmap_moments(heatmap)
        params["heatmap"] = heatmap
        if self.jacobian is not None:
            jacobian_map = rearrange(self.jacobian(feature_map), "b (one j) h w -> b one j h w", one=1)
            jacobian = (heatmap[:, :, None] * jacobian_map).sum(dim=(3, 4))  # (B, K, 4)
            affine = rearrange(jacobian, "b k (i j) -> b k i j", i=2)
            params["affine"] = affine
            params["covar"] = affine @ affine.transpose(-1, -2)
        elif self.pca_based:
            u, s = self._svd(params["covar"])
            d = torch.diag_embed(s.sqrt())
            params.update(affine=u @ d, u=u, d=d)
        return params
