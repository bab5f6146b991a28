"""Random affine + thin-plate-spline transform for the LFG equivariance losses (MRAA / FOMM).

Official counterpart: ``LFG/modules/model.py:Transform``. Differences: the randomness comes from an explicit
``torch.Generator``, tensors live on the caller's device, and the jacobian is analytic (the official one uses
``autograd.grad`` on the coordinates, which needs them to require grad and fails under ``torch.no_grad()``).
The spline term reproduces the official one exactly, including its quirks: distances are L1 (|dx| + |dy|) and the
same scalar displacement is added to both x and y. The official weights were trained with it, so we keep it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .blocks import make_coordinate_grid

_LOG_EPS = 1e-6  # official: d^2 * log(d + 1e-6)


class RandomTransform:
    """A per-sample transform T of [-1, 1]^2: T(z) = theta[:, :2] z + theta[:, 2] + tps(z) (backward mapping).

    theta: (B, 2, 3); control_points: (P, 2) or None; control_params: (B, P) or None (no spline).
    ``transform_frame`` samples the frame at T(z), so a point p of the original frame appears where T(z) = p:
    the equivariance loss therefore compares region centres mu_orig with T(mu_transformed).
    """

    def __init__(self, theta: Tensor, control_points: Tensor | None = None, control_params: Tensor | None = None):
        self.theta = theta
        self.control_points = control_points
        self.control_params = control_params

    @classmethod
    def sample(cls, batch_size: int, sigma_affine: float, sigma_tps: float | None = None,
               points_tps: int | None = None, *, device=None, dtype=torch.float32,
               generator: torch.Generator | None = None) -> "RandomTransform":
        """Identity + N(0, sigma_affine) on each of the 2x3 affine entries; with sigma_tps and points_tps, a
        points_tps x points_tps grid of spline control points with N(0, sigma_tps) weights. (Release: 0.05, 0.005, 5.)
        """
        noise = torch.randn(batch_size, 2, 3, device=device, dtype=dtype, generator=generator)
        theta = torch.eye(2, 3, device=device, dtype=dtype) + sigma_affine * noise
        if sigma_tps is None or points_tps is None:
            return cls(theta)
        points = make_coordinate_grid(points_tps, points_tps, device=device, dtype=dtype).reshape(-1, 2)
        params = sigma_tps * torch.randn(batch_size, points_tps**2, device=device, dtype=dtype, generator=generator)
        return cls(theta, points, params)

    @property
    def batch_size(self) -> int:
        return self.theta.shape[0]

    def _spline_distances(self, coordinates: Tensor) -> tuple[Tensor, Tensor]:
        """coordinates (B or 1, N, 2) -> offsets to the control points (B or 1, N, P, 2) and L1 distances (.., N, P)."""
        offsets = coordinates[:, :, None, :] - self.control_points.to(coordinates)
        return offsets, offsets.abs().sum(-1)

    def warp_coordinates(self, coordinates: Tensor) -> Tensor:
        """T(z) for coordinates (B, N, 2) (or (1, N, 2), broadcast over the batch), (x, y) in [-1, 1] -> (B, N, 2)."""
        theta = self.theta.to(coordinates)
        out = torch.einsum("bij,bnj->bni", theta[:, :, :2], coordinates.expand(theta.shape[0], -1, -1))
        out = out + theta[:, None, :, 2]
        if self.control_params is not None:
            _, dist = self._spline_distances(coordinates)
            bump = (dist**2 * torch.log(dist + _LOG_EPS) * self.control_params.to(coordinates)[:, None]).sum(-1)
            out = out + bump[..., None]  # the same displacement on x and y, as the official transform
        return out

    def jacobian(self, coordinates: Tensor) -> Tensor:
        """dT/dz at coordinates (B, N, 2) -> (B, N, 2, 2), rows = outputs (x', y'), columns = inputs (x, y).

        Spline part: d/dz [d^2 log(d + eps)] = (2 d log(d + eps) + d^2 / (d + eps)) * sign(z - c), d the L1 distance
        (sign(0) = 0, the subgradient autograd picks for |.|).
        """
        b = self.theta.shape[0]
        jac = self.theta[:, None, :, :2].to(coordinates).expand(b, coordinates.shape[1], 2, 2)
        if self.control_params is not None:
            offsets, dist = self._spline_distances(coordinates)
            radial = 2 * dist * torch.log(dist + _LOG_EPS) + dist**2 / (dist + _LOG_EPS)
            weights = radial * self.control_params.to(coordinates)[:, None]  # (B, N, P)
            grad = (weights[..., None] * torch.sign(offsets)).sum(2)  # (B, N, 2) d bump / d(x, y)
            jac = jac + grad[:, :, None, :]  # both output rows receive the same bump gradient
        return jac

    def transform_frame(self, frame: Tensor, align_corners: bool = False) -> Tensor:
        """Backward-warp frames (B, C, H, W) by T with reflection padding -> (B, C, H, W).

        The default ``align_corners=False`` is the official sampling. It reads the pixel-centre grid of
        ``make_coordinate_grid`` as if -1 / +1 were the outer pixel edges, so even the identity transform zooms by
        w / (w - 1) (0.8 % at 128 px) and the equivariance target is biased by that much. ``True`` makes the
        identity exact and the frame warp consistent with ``warp_coordinates``; keep the default for official parity.
        """
        b, _, h, w = frame.shape
        grid = make_coordinate_grid(h, w, device=frame.device, dtype=frame.dtype).reshape(1, h * w, 2)
        grid = rearrange(self.warp_coordinates(grid), "b (h w) c -> b h w c", h=h, w=w)
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=align_corners)
