"""Frechet distance between Gaussians fitted to features, and the running statistics behind FID/FVD.

`frechet_distance` follows pytorch-fid's `calculate_frechet_distance` (TTUR, stable version by
D. J. Sutherland): float64, `scipy.linalg.sqrtm` of sigma1 @ sigma2, a retry with `eps` added to
both diagonals when the product is singular, and a hard error when the square root has an
imaginary part larger than 1e-3 on its diagonal.

`FrechetMetric` keeps, for real and generated samples, the sum of features, the sum of their outer
products and the count (float64, summed across ranks), so memory does not grow with the data set
and DDP sync is one all-reduce. Subclasses only say how to turn an input into features.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from dawn_train.metrics.weights import NetworkMetric

log = logging.getLogger(__name__)


METHODS = ("sqrtm", "eig")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), in float64.

    mu: (D,); sigma: (D, D); numpy arrays or tensors.
    method "sqrtm" (default): pytorch-fid's computation, scipy.linalg.sqrtm of the product.
    method "eig": Tr sqrt(sigma1 sigma2) = sum of sqrt of the eigenvalues of the product (real and
    >= 0 for covariance matrices; torchmetrics' FID does the same). Same value up to round-off, and
    several times faster at D = 2048 on CPU (scipy 1.17's sqrtm takes tens of seconds there)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    if method == "eig":
        eig = np.linalg.eigvals(sigma1 @ sigma2)
        tr_covmean = np.sqrt(eig.astype(np.complex128)).real.sum()
        return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("frechet distance: singular product; adding %g to the diagonal of both covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def mean_cov(total: Tensor, outer: Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) from sum (D,), sum of outer products (D, D) and count,
    the same estimate as `np.cov(x, rowvar=False)`."""
    total, outer = total.double().cpu().numpy(), outer.double().cpu().numpy()
    mu = total / n
    sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
    return mu, sigma


class FrechetMetric(NetworkMetric):
    """Frechet distance between features of real and generated inputs.

    `extract(x)` maps an input batch to (N, D) features (by default `net(x)`); D = `num_features`.
    `update(x, real)` adds them (or x itself when it is already (N, D) features) to the real or the
    generated statistics; `compute()` returns a float64 scalar tensor. `method` picks how
    `frechet_distance` takes the trace of the square root."""

    higher_is_better = False

    def __init__(self, net: nn.Module | None, num_features: int, *, method: str = "sqrtm", **kwargs):
        super().__init__(net, **kwargs)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.num_features, self.method = num_features, method
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(num_features, num_features, dtype=torch.float64),
                           dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def extract(self, x: Tensor) -> Tensor:
        return self.net(x)

    def update(self, x: Tensor, real: bool) -> None:
        """x: an input batch for `extract`, or (N, D) features computed before."""
        with torch.no_grad():
            feats = x if x.ndim == 2 else self.extract(x)
        if feats.shape[-1] != self.num_features:
            raise ValueError(f"features must be (N, {self.num_features}), got {tuple(feats.shape)}")
        side = "real" if real else "fake"
        feats = feats.double().to(self.real_sum.device)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + feats.shape[0])

    def stats(self, real: bool) -> tuple[np.ndarray, np.ndarray]:
        side = "real" if real else "fake"
        n = int(getattr(self, f"{side}_n"))
        if n < 2:
            raise ValueError(f"{type(self).__name__}: need at least 2 {side} samples, got {n}")
        if n < self.num_features:
            warnings.warn(f"{type(self).__name__}: {n} {side} samples < {self.num_features} feature dims; "
                          "the covariance is rank-deficient and the distance is biased (use more samples)",
                          stacklevel=3)
        return mean_cov(getattr(self, f"{side}_sum"), getattr(self, f"{side}_outer"), n)

    def compute(self) -> Tensor:
        mu_r, sigma_r = self.stats(real=True)
        mu_f, sigma_f = self.stats(real=False)
        return torch.tensor(frechet_distance(mu_f, sigma_f, mu_r, sigma_r, method=self.method), dtype=torch.float64)


def quantize_8bit(x: Tensor) -> Tensor:
    """Round [0, 1] values to the 256 levels an image or video file holds, as the references see them
    (pytorch-fid reads PNG/JPEG, StyleGAN-V converts generator output to uint8)."""
    return (x.clamp(0, 1) * 255).round() / 255
