"""PBNet training losses as pure functions of tensors (the stage module weights and logs them).

Shapes: output/target (B, T, D) deltas w.r.t. frame 0; mu/logvar (B, T, L); mask (B, T) bool,
True = valid frame. Official weights: rc 1, kl 0.004 (with ``official_kl_weight``), reg 5e-4.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def reconstruction_loss(output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE over valid frames and all dims (official ``rc``: ``mse(x_delta[mask], output[mask])``)."""
    if mask is None:
        return torch.mean((output - target) ** 2)
    return torch.mean((output[mask] - target[mask]) ** 2)


def kl_loss(mu: Tensor, logvar: Tensor, mask: Tensor | None = None, rho: float = 0.0) -> Tensor:
    """KL(q(z | x) || p(z)) per element, averaged, for the per-frame Gaussian posterior q = prod_t N(mu_t, e^lv_t).

    ``rho=0`` (official): p = N(0, I) independently per frame, ``-0.5 mean(1 + lv - mu^2 - e^lv)``.
    ``0 < rho < 1``: p is a stationary AR(1) process in time, per latent dim,
    ``z_0 ~ N(0, 1)``, ``z_t = rho z_(t-1) + sqrt(1 - rho^2) e_t`` (unit marginal variance, lag-1
    correlation ``rho``); the exact KL of the factorised posterior against it, split per frame:
    frame 0 as above, frame t > 0
    ``-0.5 (1 + lv_t) + 0.5 log(1 - rho^2) + ((mu_t - rho mu_(t-1))^2 + e^lv_t + rho^2 e^lv_(t-1)) / (2 (1 - rho^2))``.
    Sample from it with ``stages.pose_blink.prior_latent``. Valid frames must be a prefix (padding at the end).

    ``mask=None`` averages over every frame, padded ones included, as the official ``kl``; with a mask
    only valid frames count (padded encoder outputs are meaningless)."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"kl_loss: rho must be in [0, 1), got {rho}")
    var = logvar.exp()
    if rho == 0.0:
        kl = -0.5 * (1 + logvar - mu.pow(2) - var)
    else:
        c = 1.0 - rho * rho
        first = mu[:, :1].pow(2) + var[:, :1]
        rest = ((mu[:, 1:] - rho * mu[:, :-1]).pow(2) + var[:, 1:] + rho * rho * var[:, :-1]) / c + math.log(c)
        kl = -0.5 * (1 + logvar) + 0.5 * torch.cat([first, rest], dim=1)
    return kl.mean() if mask is None else kl[mask].mean()


def smoothness_loss(output: Tensor, mask: Tensor | None = None, target: Tensor | None = None) -> Tensor:
    """Temporal smoothness of the PREDICTION, so it has a gradient.

    The official ``reg`` term, ``mse(x_delta[:, 1:], x_delta[:, :-1])``, only sees the ground truth
    and is a constant for the optimiser (see ``official_reg_loss``). Here the first difference of the
    output is penalised: with ``target`` its velocity is matched to the target's velocity
    (``mean((dy - dx)^2)``, which does not push towards a frozen head), without ``target`` the velocity
    itself is shrunk (``mean(dy^2)``). Only pairs of consecutive valid frames count.
    """
    vel = output[:, 1:] - output[:, :-1]
    if target is not None:
        vel = vel - (target[:, 1:] - target[:, :-1])
    sq = vel.pow(2)
    if mask is None:
        return sq.mean()
    pair = mask[:, 1:] & mask[:, :-1]  # (B, T-1)
    return sq[pair].mean() if pair.any() else sq.sum() * 0.0


def official_reg_loss(x_delta: Tensor) -> Tensor:
    """The official ``reg`` loss, ground truth only (no gradient to the model), padded frames included.
    For logging/comparison with official runs."""
    return torch.mean((x_delta[:, :-1] - x_delta[:, 1:]) ** 2)


def official_kl_weight(epoch: int, lambda_kl: float = 0.004) -> float:
    """KL weight schedule of the official ``CAE.compute_loss`` (epochs of ~10 iterations).

    0 for epochs 1..9999, then ``lambda_kl * max(epoch - 1e4, 7e4) / 7e4``: the ``max`` (probably meant
    as ``min``) keeps lambda_kl until epoch 80000, then grows linearly. Epoch 0 gets the full weight.
    """
    if epoch == 0:
        return lambda_kl
    if epoch < 10_000:
        return 0.0
    return lambda_kl * max(epoch - 1e4, 7e4) / 7e4
