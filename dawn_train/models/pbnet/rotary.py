"""Rotary position embedding (RoPE) exactly as the official PBNet applies it.

The official decoder uses ``rotary_embedding_torch.RotaryEmbedding(min(32, num_heads))``: it rotates
only the first ``rotary_dim`` features of each 32-d head (4 of 32 in the release, a quirk we keep for
weight parity), with interleaved pairs ``(x0, x1), (x2, x3), ...`` and integer positions ``0..n-1``.
Its frequencies sit in the state dict under every attention (``...rotary_emb.freqs``), so they are a
persistent buffer here; we do not need the package itself.
"""
from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn


def rotary_frequencies(dim: int, theta: float = 10000.0) -> Tensor:
    """(dim // 2,) float32 frequencies ``theta ** (-2i / dim)``, same expression as the official package."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))


def rotate_pairs(x: Tensor) -> Tensor:
    """(..., 2k) -> (..., 2k): each interleaved pair (a, b) becomes (-b, a)."""
    x = rearrange(x, "... (d r) -> ... d r", r=2)
    a, b = x.unbind(dim=-1)
    return rearrange(torch.stack((-b, a), dim=-1), "... d r -> ... (d r)")


class RotaryEmbedding(nn.Module):
    """Rotates the first ``dim`` features of queries/keys laid out as (..., n, d_head)."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"rotary dim must be even and >= 2, got {dim}")
        self.dim = dim
        self.register_buffer("freqs", rotary_frequencies(dim, theta))  # official key ``rotary_emb.freqs``

    def angles(self, n: int, device: torch.device) -> Tensor:
        """(n, dim) angles, each frequency repeated for its pair; float32 even under bf16 weights
        because positions up to several hundred need the mantissa."""
        pos = torch.arange(n, device=device, dtype=torch.float32)
        ang = rearrange(pos, "n -> n 1") * rearrange(self.freqs.float(), "f -> 1 f")
        return repeat(ang, "n f -> n (f r)", r=2)

    def cos_sin(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos and sin of :meth:`angles`, cached per length: a training step rotates q and k of five attentions
        at the same length, and recomputing the table each time is ~10 small ops per call. The key holds the
        buffer's version and storage, so loading or moving ``freqs`` invalidates it."""
        key = (n, device, self.freqs.device, self.freqs.data_ptr(), self.freqs._version)
        cache = getattr(self, "_cos_sin", None)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                ang = self.angles(n, device)
                cache = (key, ang.cos(), ang.sin())
            self._cos_sin = cache
        return cache[1], cache[2]

    def forward(self, t: Tensor) -> Tensor:
        """t: (..., n, d_head) with d_head >= dim. Returns the same shape and dtype."""
        cos, sin = self.cos_sin(t.shape[-2], t.device)
        rot, rest = t[..., : self.dim], t[..., self.dim :]
        rot = rot * cos + rotate_pairs(rot) * sin
        return torch.cat((rot.to(t.dtype), rest), dim=-1)
