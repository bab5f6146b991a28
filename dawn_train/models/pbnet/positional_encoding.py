"""Fixed sinusoidal position table, kept as the official (max_len, 1, d) buffer ``pe``."""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """(max_len, d_model) float32: ``[p, 2i] = sin(p w_i)``, ``[p, 2i+1] = cos(p w_i)``,
    ``w_i = exp(-2i ln(10000) / d)``; the same float32 expression as the official buffer (bit-identical)."""
    position = rearrange(torch.arange(0, max_len, dtype=torch.float), "p -> p 1")
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds ``pe[:T]`` to batch-first tokens, then dropout.

    The released checkpoints store the whole 20000-row table (``sequence_pos_encoder.pe``), so it is a
    persistent buffer of shape (max_len, 1, d) even though it is deterministic.
    """

    def __init__(self, d_model: int, *, dropout: float = 0.1, max_len: int = 20000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.register_buffer("pe", rearrange(sinusoidal_table(max_len, d_model), "p d -> p 1 d"))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, d). Returns (B, T, d)."""
        t, max_len = x.shape[1], self.pe.shape[0]
        if t > max_len:
            raise ValueError(f"sequence of {t} frames exceeds the positional table ({max_len} rows)")
        return self.dropout(x + rearrange(self.pe[:t], "t 1 d -> 1 t d"))
