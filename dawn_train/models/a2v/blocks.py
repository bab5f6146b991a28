"""Convolutional building blocks of the A2V-FDM UNet: time embedding, per-frame cross-attention
conditioning (audio / pose / eye) and the conditioned ResNet block (official ``ResnetBlock_ca_mul``).
All convolutions act per frame (kernel (1, k, k)); frames only mix in temporal attention."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .conv import Conv3d


class SinusoidalPosEmb(nn.Module):
    """Diffusion-step embedding (Transformer sinusoids, sin half then cos half): (B,) -> (B, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000) / (half - 1)))
        arg = x[:, None] * freq[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class GainLayerNorm(nn.Module):
    """LayerNorm over the last axis with a gain only (official ``LayerNorm_img``).

    ``eps=None`` reproduces the official rule: 1e-5 for float32 inputs, 1e-3 for any other dtype
    (so the released fp16-trained weights see the eps they were trained with).  Pass a float to
    force one value (e.g. 1e-5 to compare a float64 run against float32 fixtures)."""

    def __init__(self, dim: int, eps: Optional[float] = None):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(dim))

    def eps_for(self, x: Tensor) -> float:
        return self.eps if self.eps is not None else (1e-5 if x.dtype == torch.float32 else 1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.g.shape, self.g, None, self.eps_for(x))  # one fused kernel, ~15x a var/mean pair


class CrossAttention(nn.Module):
    """Every pixel of a frame attends over two keys: a learned null key/value (shared by heads)
    and that frame's projected condition token.  Cosine-similarity attention (q, k L2-normalised,
    learned per-dim scales, temperature ``scale``).

    x: (B*T, P, dim) pixels; context: (B, T, context_dim) -> (B*T, P, out_dim)."""

    def __init__(self, dim: int, out_dim: int, *, context_dim: Optional[int] = None, dim_head: int = 8,
                 heads: int = 8, scale: float = 8.0, norm_eps: Optional[float] = None):
        super().__init__()
        self.scale = scale
        self.heads = heads
        inner = dim_head * heads
        context_dim = context_dim or dim
        self.norm = GainLayerNorm(dim, eps=norm_eps)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(inner, out_dim, bias=False), GainLayerNorm(out_dim, eps=norm_eps))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.attend(self.to_q(self.norm(x)), context)

    def attend_two_keys(self, q: Tensor, context: Tensor) -> Tensor:
        """:meth:`attend` in closed form (same result): over two keys the softmax is a sigmoid of the score
        difference, s1 - s0 = scale * <q, (k1_hat - k0_hat) * k_scale * q_scale> / |q|, and the output projection of
        v0 + a (v1 - v0) is to_out(v0) + sum_h a_h W_h (v1_h - v0_h): per pixel one dot product and one weighted sum
        over heads instead of normalised queries, a score tensor and a per-pixel projection.
        q: (B*T, P, heads * dim_head), context: (B, T, context_dim) -> (B*T, P, out_dim)."""
        n, p, _ = q.shape
        k, v = self.to_kv(rearrange(context, "b t c -> (b t) c")).chunk(2, dim=-1)
        k, v = (rearrange(t, "n (h d) -> n h d", h=self.heads) for t in (k, v))  # (N, H, d)
        null_k, null_v = self.null_kv.unbind(dim=0)  # (d,) each, shared by heads
        k1 = F.normalize(k, dim=-1) * self.k_scale
        k0 = F.normalize(null_k, dim=-1) * self.k_scale
        direction = (k1 - k0) * self.q_scale * self.scale  # (N, H, d)
        q = q.view(n, p, self.heads, -1)
        diff = torch.einsum("n p h d, n h d -> n p h", q, direction) / q.norm(dim=-1).clamp(min=1e-12)
        weight = torch.sigmoid(diff.float()).to(q.dtype)  # attention on the frame's own key, (N, P, H)
        project = self.to_out[0].weight.view(-1, self.heads, v.shape[-1])  # (out, H, d)
        base = torch.einsum("d, o h d -> o", null_v, project)  # to_out(v0): (out,)
        delta = torch.einsum("n h d, o h d -> n h o", v - null_v, project)  # (N, H, out)
        return self.to_out[1](torch.baddbmm(base.expand(n, 1, -1), weight, delta))

    def attend(self, q: Tensor, context: Tensor) -> Tensor:
        """The attention from projected queries q = to_q(norm(x)): (B*T, P, heads * dim_head) -> (B*T, P, out_dim)."""
        n = q.shape[0]
        q = rearrange(q, "n p (h d) -> n h p d", h=self.heads)
        k, v = self.to_kv(rearrange(context, "b t c -> (b t) 1 c")).chunk(2, dim=-1)
        k, v = (rearrange(t, "n 1 (h d) -> n h 1 d", h=self.heads) for t in (k, v))
        null_k, null_v = (repeat(t, "d -> n h 1 d", n=n, h=self.heads) for t in self.null_kv.unbind(dim=0))
        k = torch.cat((null_k, k), dim=-2)  # (B*T, H, 2, d)
        v = torch.cat((null_v, v), dim=-2)
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        sim = torch.einsum("n h p d, n h j d -> n h p j", q, k) * self.scale
        attn = sim.softmax(dim=-1, dtype=torch.float32).to(sim.dtype)
        out = torch.einsum("n h p j, n h j d -> n h p d", attn, v)
        return self.to_out(rearrange(out, "n h p d -> n p (h d)"))


class Block(nn.Module):
    """Conv(1,3,3) -> GroupNorm -> optional (1 + scale, shift) -> SiLU on (B, C, T, H, W)."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.proj = Conv3d(dim, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, scale_shift: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
        x = self.norm(self.proj(x))  # GroupNorm statistics span all frames of the clip
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


def _cond_mlp(in_dim: Optional[int], out_dim: int) -> Optional[nn.Sequential]:
    return nn.Sequential(nn.SiLU(), nn.Linear(in_dim, out_dim)) if in_dim else None


class ResnetBlock(nn.Module):
    """ResNet block with diffusion-step scale/shift and per-frame condition cross-attention.

    The per-frame condition (B, T, audio + pose + eye) is split by ``audio_emb_dim`` /
    ``pose_emb_dim`` (eye = the rest); each part goes through SiLU -> Linear(-> 2*dim_out) and a
    :class:`CrossAttention` queried by the block input; the three outputs are summed and added
    after ``block1``.  Without ``time_emb_dim``/``audio_emb_dim`` (head blocks) the cross-attention
    modules still exist (they are in the release checkpoint) but are not used.

    x: (B, dim, T, H, W), time_emb: (B, time_emb_dim), cond: (B, T, D) -> (B, dim_out, T, H, W).
    """

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: Optional[int] = None,
                 audio_emb_dim: Optional[int] = None, pose_emb_dim: Optional[int] = None,
                 eye_emb_dim: Optional[int] = None, groups: int = 8, norm_eps: Optional[float] = None):
        super().__init__()
        self.time_mlp = _cond_mlp(time_emb_dim, dim_out * 2)
        self.audio_mlp = _cond_mlp(audio_emb_dim, dim_out * 2)
        self.pose_mlp = _cond_mlp(pose_emb_dim, dim_out * 2)
        self.eye_mlp = _cond_mlp(eye_emb_dim, dim_out * 2)
        self.audio_emb_dim = audio_emb_dim or 0
        self.pose_emb_dim = pose_emb_dim or 0
        ca = dict(context_dim=dim_out * 2, out_dim=dim_out, norm_eps=norm_eps)
        self.cross_attn_aud = CrossAttention(dim, **ca)
        self.cross_attn_pose = CrossAttention(dim, **ca)
        self.cross_attn_eye = CrossAttention(dim, **ca)
        self.block1 = Block(dim, dim_out, groups=groups)
        self.block2 = Block(dim_out, dim_out, groups=groups)
        self.res_conv = Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def _cond_features(self, x: Tensor, cond: Tensor, fused: bool = False) -> Tensor:
        a, p = self.audio_emb_dim, self.pose_emb_dim
        audio, pose, eye = cond[..., :a], cond[..., a:a + p], cond[..., a + p:]
        b, _, t, h, w = x.shape
        pixels = rearrange(x, "b c t h w -> (b t) (h w) c")
        pairs = ((self.cross_attn_pose, self.pose_mlp(pose)), (self.cross_attn_aud, self.audio_mlp(audio)),
                 (self.cross_attn_eye, self.eye_mlp(eye)))
        if fused:
            # the three attentions query the same pixels: normalise them once and project the queries of all
            # three in one matmul (each gain folded into its query weights: to_q(norm(x) * g) = norm(x) @ (W * g)^T)
            first = self.cross_attn_pose.norm
            normed = F.layer_norm(pixels, first.g.shape, None, None, first.eps_for(pixels))
            weight = torch.cat([attn.to_q.weight * attn.norm.g for attn, _ in pairs])  # (3 * inner, dim)
            queries = (normed @ weight.t()).chunk(3, dim=-1)
            outs = [attn.attend_two_keys(q, ctx) for (attn, ctx), q in zip(pairs, queries)]
        else:
            outs = [attn(pixels, ctx) for attn, ctx in pairs]
        out = outs[0] + outs[1] + outs[2]
        return rearrange(out, "(b t) (h w) c -> b c t h w", b=b, h=h, w=w)

    def forward(self, x: Tensor, time_emb: Optional[Tensor] = None, cond: Optional[Tensor] = None,
                fused: bool = False) -> Tensor:
        """``fused``: the three cross-attentions share one normalisation and one query matmul (same result)."""
        scale_shift = None
        if self.time_mlp is not None:
            scale_shift = rearrange(self.time_mlp(time_emb), "b c -> b c 1 1 1").chunk(2, dim=1)
        h = self.block1(x, scale_shift=scale_shift)
        if self.audio_mlp is not None:
            h = h + self._cond_features(x, cond, fused)
        h = self.block2(h)
        return h + self.res_conv(x)


def Downsample(dim: int) -> nn.Module:
    return Conv3d(dim, dim, (1, 4, 4), (1, 2, 2), (0, 1, 1))


def Upsample(dim: int, use_deconv: bool = True, padding_mode: str = "zeros") -> nn.Module:
    if use_deconv:
        return nn.ConvTranspose3d(dim, dim, (1, 4, 4), (1, 2, 2), (0, 1, 1))
    return nn.Sequential(nn.Upsample(scale_factor=(1, 2, 2), mode="nearest"),
                         Conv3d(dim, dim, (1, 3, 3), padding=(0, 1, 1), padding_mode=padding_mode))
