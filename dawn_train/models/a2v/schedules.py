"""Beta schedules for Gaussian diffusion, pure functions of the step count (float64), chosen by name."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal, "Improved DDPM" (arXiv 2102.09672): betas (timesteps,)
    float64, clipped to [0, 0.9999].  This is the DAWN / LFDM schedule."""
    steps = timesteps + 1
    x = torch.linspace(0, timesteps, steps, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.9999)


def linear_beta_schedule(timesteps: int) -> Tensor:
    """Linear schedule of Ho et al., "DDPM" (arXiv 2006.11239), rescaled so that 1000 steps give
    1e-4 ... 0.02: betas (timesteps,) float64."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


SCHEDULES = {"cosine": cosine_beta_schedule, "linear": linear_beta_schedule}


def beta_schedule(name: str, timesteps: int) -> Tensor:
    """Betas (timesteps,) float64 of the schedule called ``name`` (one of :data:`SCHEDULES`)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](timesteps)
