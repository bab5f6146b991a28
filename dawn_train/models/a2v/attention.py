"""Attention layers of the A2V-FDM UNet: temporal (RoPE + T5 relative bias, optionally banded),
full spatial (mid block) and linear spatial attention, with the official wrapper nesting
``Residual -> PreNorm -> (axis wrapper) -> Attention`` so state-dict keys match the release
(``...fn.norm.gamma``, ``...fn.fn.fn.to_qkv.weight``, ``...fn.fn.fn.rotary_emb.freqs``)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .local_attention import AttnBackend, band_mask, dense_attention, relative_positions, windowed_attention


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer, arXiv 2104.09864) with interleaved pairs, as in
    rotary-embedding-torch 0.3.5.  Rotates the first ``dim`` features of the last axis.
    ``freqs`` (dim/2,) = 10000^(-2i/dim) is a frozen parameter because the release stores it
    (one instance is shared by all temporal attentions; its key appears under each)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.dim = dim
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def turns(self, t: int, x: Tensor) -> Tensor:
        """(T, dim/2) unit complex numbers e^(i pos freq) in x's (real) dtype: the rotation of each pair."""
        pos = torch.arange(t, device=x.device, dtype=self.freqs.dtype)
        return torch.polar(torch.ones((), device=x.device, dtype=x.dtype), (pos[:, None] * self.freqs[None, :]).to(x.dtype))

    def rotate_projected(self, qk: Tensor, heads: int, q_scale: float) -> Tensor:
        """Rotate the query and key heads of a projection in place of its layout, scaling the queries in the same
        complex product: qk (N, T, 2 * heads * dim) = [q | k] -> (N, 2 * heads, T, dim), q heads first.  Needs
        float32/64 and heads of exactly ``dim`` features (see :meth:`can_rotate_complex`)."""
        turn = self.turns(qk.shape[1], qk)  # (T, dim/2)
        scale = torch.ones(2 * heads, device=qk.device, dtype=qk.dtype)
        scale[:heads] = q_scale
        pairs = torch.view_as_complex(qk.unflatten(-1, (2 * heads, -1, 2)))  # (N, T, 2 * heads, dim/2), no copy
        return torch.view_as_real(pairs * (turn[:, None, :] * scale[None, :, None])).flatten(-2).transpose(1, 2)

    def can_rotate_complex(self, x: Tensor, dim_head: int) -> bool:
        return x.dtype in (torch.float32, torch.float64) and dim_head == self.dim

    def rotate(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """x: (..., T, D) -> x * scale with its first ``dim`` features rotated, position t = index along T (the
        scale rides on the rotation tables: no pass of its own over x)."""
        t = x.shape[-2]
        if self.can_rotate_complex(x, x.shape[-1]):
            # interleaved pairs (x0, x1) are the complex numbers x0 + i x1, rotated by one complex product
            pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())
            turn = self.turns(t, x)
            return torch.view_as_real(pairs * (turn * scale if scale != 1.0 else turn)).flatten(-2)
        # (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) as x * cos + swapped(x) * (-sin, sin): one copy (the swap)
        # and two products, where a stack of (-x1, x0) and a sum of two products took five passes over x
        pos = torch.arange(t, device=x.device, dtype=self.freqs.dtype)
        angles = pos[:, None] * self.freqs[None, :]  # (T, dim/2)
        cos, sin = angles.cos().repeat_interleave(2, dim=-1), angles.sin()  # (T, dim), (T, dim/2)
        sin = torch.stack((-sin, sin), dim=-1).flatten(-2)  # (-sin, sin) per pair
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        rot = x[..., : self.dim]
        swapped = rot.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        out = torch.addcmul(rot * cos, swapped, sin)
        if self.dim == x.shape[-1]:  # the whole head rotates (the release: 32 of 32): no concatenation
            return out
        rest = x[..., self.dim:]
        return torch.cat((out, rest * scale if scale != 1.0 else rest), dim=-1)


class RelativePositionBias(nn.Module):
    """T5 bucketed relative position bias (arXiv 1910.10683): half the buckets per direction,
    exact for |j-i| < num_buckets/4, log-spaced up to ``max_distance``, saturated beyond."""

    def __init__(self, heads: int = 8, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def bucket(self, rel: Tensor) -> Tensor:
        """rel = j - i (int64, any shape) -> bucket index (same shape)."""
        n = -rel
        half = self.num_buckets // 2
        ret = (n < 0).long() * half
        n = n.abs()
        max_exact = half // 2
        far = n.clamp(min=max_exact).float()  # log only evaluated where it is used
        large = max_exact + (
            torch.log(far / max_exact) / math.log(self.max_distance / max_exact) * (half - max_exact)
        ).long()
        large = large.clamp(max=half - 1)
        return ret + torch.where(n < max_exact, n, large)

    def forward(self, rel: Tensor) -> Tensor:
        """rel: (I, J) int64 of j - i -> bias (heads, I, J)."""
        return rearrange(self.relative_attention_bias(self.bucket(rel)), "i j h -> h i j")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, T, H, W), gain only (official ``LayerNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # fused layer_norm over a channels-last view: ~2x a var/mean pair over the strided channel axis
        return self.channels_last(x.movedim(1, -1)).movedim(-1, 1)

    def channels_last(self, x: Tensor) -> Tensor:
        """The same norm on a tensor whose channels are its last axis, (..., C) -> (..., C)."""
        return F.layer_norm(x, x.shape[-1:], self.gamma.flatten(), None, self.eps)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(x, **kwargs) + x


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


def split_projection(to_qkv: nn.Module, x: Tensor) -> list[Tensor]:
    """``to_qkv(x).chunk(3)`` as three projections, each with its third of the stored weight (same result, same
    state dict).  For training: the backward then sums three small input gradients instead of concatenating the
    three output gradients into one (N, ..., 3 * hidden) tensor, a large fresh copy (63 MB, ~90 ms on a 2-core CPU,
    per attention at the release UNet's 32x32 level).  ``to_qkv``: a bias-free ``nn.Linear`` (x (..., C)) or 1x1
    ``nn.Conv2d`` (x (N, C, H, W))."""
    weights = to_qkv.weight.chunk(3, dim=0)
    if isinstance(to_qkv, nn.Conv2d):
        return [F.conv2d(x, w) for w in weights]
    return [F.linear(x, w) for w in weights]


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of (N, L, C); no biases in the
    projections, q scaled by dim_head^-0.5 before the optional rotary embedding."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32,
                 rotary_emb: Optional[RotaryEmbedding] = None):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden = heads * dim_head
        self.rotary_emb = rotary_emb
        self.to_qkv = nn.Linear(dim, hidden * 3, bias=False)
        self.to_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor, pos_bias: Optional[RelativePositionBias] = None, half: Optional[int] = None,
                block_size: Optional[int] = None, backend: AttnBackend = "math", masked: bool = False,
                split_qkv: bool = False) -> Tensor:
        """x: (N, L, C) -> (N, L, C); attends within |i - j| <= half (None = all).  ``masked``: the official
        path (the full (L, L) scores with -inf outside the band) instead of the banded one (same result).
        ``split_qkv``: with grad, see :func:`split_projection` (same result)."""
        rotary = self.rotary_emb
        if split_qkv and torch.is_grad_enabled():
            parts = split_projection(self.to_qkv, x)
        else:
            qkv = self.to_qkv(x)
            hidden = qkv.shape[-1] // 3
            # the projection's dtype decides, not x's: under bf16 autocast it is bfloat16, which CUDA has no complex
            # type for
            if rotary is not None and not torch.is_grad_enabled() and rotary.can_rotate_complex(qkv, hidden // self.heads):
                # sampling: rotate and scale q and k in one complex product on the projection (~2x this layer's
                # forward); training keeps the per-tensor path, whose backward is faster
                q, k = rotary.rotate_projected(qkv[..., :2 * hidden], self.heads, self.scale).chunk(2, dim=1)
                v = rearrange(qkv[..., 2 * hidden:], "n l (h d) -> n h l d", h=self.heads)
                return self.attend(q, k, v, x.shape[1], pos_bias, half, block_size, backend, masked)
            parts = qkv.chunk(3, dim=-1)
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=self.heads) for t in parts)
        if rotary is not None:
            q, k = rotary.rotate(q, self.scale), rotary.rotate(k)
        else:
            q = q * self.scale
        return self.attend(q, k, v, x.shape[1], pos_bias, half, block_size, backend, masked)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, length: int, pos_bias: Optional[RelativePositionBias],
               half: Optional[int], block_size: Optional[int], backend: AttnBackend, masked: bool) -> Tensor:
        """Attention of scaled, rotated heads q, k, v (N, heads, L, dim_head) and the output projection -> (N, L, C)."""
        if masked:
            rel = relative_positions(length, length, device=q.device)
            bias = pos_bias(rel) if pos_bias is not None else None
            out = dense_attention(q, k, v, bias, mask=band_mask(length, half, device=q.device), backend=backend)
        else:
            out = windowed_attention(q, k, v, half=half, bias_fn=pos_bias, block_size=block_size, backend=backend)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))


class TemporalAttention(nn.Module):
    """Attention across frames at every pixel: (B, C, T, H, W) -> (B, C, T, H, W)."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_emb: RotaryEmbedding):
        super().__init__()
        self.fn = Attention(dim, heads=heads, dim_head=dim_head, rotary_emb=rotary_emb)

    def forward(self, x: Tensor, position_chunk: Optional[int] = None, norm: Optional[ChannelLayerNorm] = None,
                **kwargs) -> Tensor:
        """``position_chunk``: attend for that many pixels at a time (each pixel's frames are independent), so the
        projections and scores of long clips never exist for all pixels at once; None = all at once.  ``norm``:
        the block's PreNorm, applied here to the (pixels, frames, channels) sequences after their one layout copy
        instead of before it on the strided channel axis (the UNet's fast path: one pass over x less per layer)."""
        b, _, _, h, w = x.shape
        seqs = rearrange(x, "b c t h w -> (b h w) t c")

        def attend(part: Tensor) -> Tensor:
            return self.fn(part if norm is None else norm.channels_last(part), **kwargs)

        if position_chunk is None or position_chunk >= seqs.shape[0]:
            out = attend(seqs)
        else:
            out = torch.cat([attend(part) for part in seqs.split(position_chunk)])
        return rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h, w=w)


class SpatialAttention(nn.Module):
    """Full attention across pixels of each frame: (B, C, T, H, W) -> (B, C, T, H, W)."""

    def __init__(self, dim: int, heads: int, dim_head: int = 32):
        super().__init__()
        self.fn = Attention(dim, heads=heads, dim_head=dim_head)

    def forward(self, x: Tensor, backend: AttnBackend = "math") -> Tensor:
        b, _, _, h, w = x.shape
        out = self.fn(rearrange(x, "b c t h w -> (b t) (h w) c"), backend=backend)
        return rearrange(out, "(b t) (h w) c -> b c t h w", b=b, h=h, w=w)


class SpatialLinearAttention(nn.Module):
    """Linear attention over the pixels of each frame (softmax of q over features, of k over
    pixels; arXiv 1812.01243): (B, C, T, H, W) -> (B, C, T, H, W)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor, frame_chunk: Optional[int] = None, split_qkv: bool = False) -> Tensor:
        """``frame_chunk``: attend for that many frames at a time (frames are independent here), so the
        projections of long clips never exist for all frames at once; None = all at once.  ``split_qkv``: with
        grad, see :func:`split_projection` (same result)."""
        b = x.shape[0]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        if frame_chunk is None or frame_chunk >= frames.shape[0]:
            out = self.attend(frames, split_qkv)
        else:
            out = torch.cat([self.attend(part, split_qkv) for part in frames.split(frame_chunk)])
        return rearrange(out, "(b t) c h w -> b c t h w", b=b)

    def attend(self, x: Tensor, split_qkv: bool = False) -> Tensor:
        """x: (N, C, H, W) frames -> (N, C, H, W)."""
        h, w = x.shape[-2:]
        if split_qkv and torch.is_grad_enabled():
            # NCHW first: the PreNorm hands over channels-last frames, which would make the three convolutions
            # channels-last and their backward copy each (3x wider) output gradient to that layout; 1.25x this layer
            parts = split_projection(self.to_qkv, x.contiguous())
        else:
            parts = self.to_qkv(x).chunk(3, dim=1)
        q, k, v = (rearrange(t, "n (h d) x y -> n h d (x y)", h=self.heads) for t in parts)
        q = q.softmax(dim=-2)
        k = k.softmax(dim=-1)
        # the query scale applied to the small (d, e) context instead of the (d, pixels) queries: ~1.4x faster
        context = torch.einsum("n h d p, n h e p -> n h d e", k, v) * self.scale
        out = torch.einsum("n h d e, n h d p -> n h e p", context, q)
        return self.to_out(rearrange(out, "n h e (x y) -> n (h e) x y", x=h, y=w))
