"""Decoder attention blocks of PBNet (official ``transformerdecoder4.py`` / ``transformerreemb5.py``).

Attribute names (``to_qkv``, ``to_q``/``to_k``/``to_v``, ``to_out``, ``rotary_emb``, ``fn``,
``norm.gamma``) follow the official state-dict keys. Heads have a fixed width ``dim_head`` (32)
independent of the model width, projections have no bias, and queries are scaled by
``dim_head ** -0.5`` before RoPE, as in the official code.

The relative-position bias is either a dense (H, N, M) tensor (the official computation: training, and
sequences within the eval window) or a :class:`BandedBias`: the eval-mode +-window as banded attention
(``models/a2v/local_attention.windowed_attention``), O(N x window) memory instead of O(N^2), equal to the
dense masked attention up to float rounding (the official -1e8 weight is exactly 0 in float32).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dawn_train.models.a2v.local_attention import dense_attention, windowed_attention

from .rotary import RotaryEmbedding


@dataclass(frozen=True)
class BandedBias:
    """Attention restricted to keys ``|j - i| <= half`` with the bias ``fn(j - i)``: ``fn`` maps (I, J) int64
    offsets to (H, I, J) (e.g. ``RelativePositionBias.offset_bias``) and is evaluated per block, never (N, N)."""

    fn: Callable[[Tensor], Tensor]
    half: int


PosBias = Union[Tensor, BandedBias, None]


class LayerNorm(nn.Module):
    """Gain-only LayerNorm (no bias, biased variance, eps inside the sqrt); gamma is (1, 1, dim)
    because that is its shape in the released checkpoints."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=-1, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.gamma


class PreNorm(nn.Module):
    """``fn(norm(x))``; exists so that keys read ``<...>.norm.gamma`` and ``<...>.fn.*``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


class Residual(nn.Module):
    """``fn(x) + x``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(x, **kwargs) + x


def attend(q: Tensor, k: Tensor, v: Tensor, rotary: RotaryEmbedding, pos_bias: PosBias) -> Tensor:
    """q, k, v: (B, H, N, Dh), q already scaled; pos_bias: (H, N, M) / (B, H, N, M), a :class:`BandedBias`
    (N = M) or None. Returns (B, H, N, Dh).

    RoPE is applied to q and k with positions 0..N-1 each (self- and cross-attention alike, memory and
    queries are frame-aligned). softmax(q k^T + bias) v via SDPA with ``scale=1`` because the official
    code scales q before the rotation; banded: block by block over an unfolded +-half window.
    """
    q, k = rotary(q), rotary(k)
    if isinstance(pos_bias, BandedBias):
        return windowed_attention(q, k, v, half=pos_bias.half, bias_fn=lambda rel: pos_bias.fn(rel).to(q.dtype))
    mask = None if pos_bias is None else pos_bias.to(q.dtype)
    if mask is not None and torch.is_grad_enabled():
        # Training: the bias is learned, so SDPA takes its unfused math path, whose "safe" softmax adds three
        # (B, H, N, M) passes (isneginf / all / where) for rows that cannot occur here (no -inf bias). The plain
        # formula is the official one (einsum, + bias, softmax, einsum).
        return dense_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


class Attention(nn.Module):
    """Multi-head self-attention with RoPE and an optional additive relative-position bias."""

    def __init__(self, dim: int, *, heads: int = 4, dim_head: int = 32, rotary_dim: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        inner = dim_head * heads
        self.rotary_emb = RotaryEmbedding(rotary_dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, pos_bias: PosBias = None) -> Tensor:
        """x: (B, N, C); pos_bias: (H, N, N), a :class:`BandedBias` or None. Returns (B, N, C)."""
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = attend(q * self.scale, k, v, self.rotary_emb, pos_bias)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    def forward_constant(self, x: Tensor) -> Tensor:
        """Self-attention over a sequence whose frames all equal x (B, 1, C): (B, 1, C), every frame's output.

        Each query's softmax weights sum to 1 and every value is the same vector v(x), so the output is
        to_out(v(x)) whatever q, k, RoPE and the bias (window, padding) are: the same function without the
        (N, N) scores. Its q/k projections get an exact zero gradient (the full computation gives them rounding
        noise around zero). PBNet's decoder queries are such a sequence up to the first cross-attention.
        """
        inner = self.to_out.in_features
        return self.to_out(F.linear(x, self.to_qkv.weight[2 * inner:]))  # rows 2*inner.. of to_qkv are v


class CrossAttention(nn.Module):
    """Multi-head attention from queries to a frame-aligned memory (official ``Attention_2``):
    separate q/k/v projections, RoPE on q and k, additive relative-position bias."""

    def __init__(self, dim: int, *, heads: int = 4, dim_head: int = 32, rotary_dim: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        inner = dim_head * heads
        self.rotary_emb = RotaryEmbedding(rotary_dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, memory: Tensor, pos_bias: PosBias = None) -> Tensor:
        """x: (B, N, C) queries; memory: (B, M, C) keys = values; pos_bias: (H, N, M), a :class:`BandedBias`
        (M = N) or None. Returns (B, N, C)."""
        def split(t: Tensor) -> Tensor:
            return rearrange(t, "b n (h d) -> b h n d", h=self.heads)

        q, k, v = split(self.to_q(x)), split(self.to_k(memory)), split(self.to_v(memory))
        out = attend(q * self.scale, k, v, self.rotary_emb, pos_bias)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))
