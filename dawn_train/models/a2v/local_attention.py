"""Temporal attention restricted to a band of frames, in O(T * w) memory.

DAWN applies "local" temporal attention at inference (paper Table 5: window 20/40/80/200/None).
Window conventions, made explicit here because the paper and the official code count differently:

* ``"total"`` (default, the paper's count): ``window_size`` is the whole span, frame ``i`` attends
  to frame ``j`` iff ``|i - j| <= window_size // 2``.  Paper "80" = official ``win_width=40``.
* ``"per_side"`` (the official ``win_width``): frame ``i`` attends to ``j`` iff ``|i - j| <= window_size``.

``window_size=None`` means full attention.  Either way we reduce it to ``half_width`` (frames per side).

The banded attention splits the queries into blocks of ``block`` frames; block ``n`` attends to keys
``[n*block - half, n*block + block - 1 + half]`` (one unfolded window per block), the band and the clip
ends are masked, and the relative-position bias is the same ``(heads, block, block + 2*half)`` table for
every block.  The result equals full attention with a band mask up to float rounding (~1e-7).
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

WindowConvention = Literal["total", "per_side"]
AttnBackend = Literal["math", "sdpa"]
BiasFn = Callable[[Tensor], Tensor]  # relative positions j - i, (I, J) int64 -> (heads, I, J) bias


def half_width(window_size: Optional[int], convention: WindowConvention = "total") -> Optional[int]:
    """Frames attended on each side of a query, or None for full attention."""
    if window_size is None:
        return None
    if window_size < 0:
        raise ValueError(f"window_size must be >= 0 or None, got {window_size}")
    if convention == "total":
        return int(window_size) // 2
    if convention == "per_side":
        return int(window_size)
    raise ValueError(f"window_convention must be 'total' or 'per_side', got {convention!r}")


def relative_positions(n_query: int, n_key: int, key_offset: int = 0, device=None) -> Tensor:
    """(I, J) int64 matrix of ``j - i`` where key j sits at ``key_offset + j``."""
    q = torch.arange(n_query, device=device)
    k = torch.arange(n_key, device=device) + key_offset
    return k[None, :] - q[:, None]


def band_mask(num_frames: int, half: Optional[int], device=None) -> Tensor:
    """(T, T) bool, True where frame i may attend to frame j."""
    rel = relative_positions(num_frames, num_frames, device=device)
    if half is None:
        return torch.ones_like(rel, dtype=torch.bool)
    return rel.abs() <= half


def dense_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor] = None, mask: Optional[Tensor] = None,
    backend: AttnBackend = "math",
) -> Tensor:
    """Plain attention.  q, k, v: (..., H, T, D) with q already scaled; bias: (H, T, T) additive;
    mask: (T, T) bool (True = attend).  Returns (..., H, T, D)."""
    if mask is not None:
        neg = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        bias = neg if bias is None else bias + neg
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                              scale=1.0)
    sim = q @ k.transpose(-1, -2)
    if bias is not None:
        sim += bias  # in place: matmul's backward does not need its output
    # (the official code subtracts the detached row max first; softmax does the same internally)
    return sim.softmax(dim=-1) @ v


QUERY_CHUNK = 256  # query frames per group of blocks in the math backend


def _flat_windows(q: Tensor, k: Tensor, v: Tensor, table: Tensor, *, half: int, t: int) -> Tensor:
    """The banded attention without copying key/value windows (sampling, no grad).

    Every sequence is padded to whole blocks and all of them are laid end to end with ``half`` zero frames before
    the first and after the last, so the window of block ``m`` of the flat sequence starts ``m * block`` frames
    later than the one before: all windows are one strided view (overlapping, never copied) that ``bmm`` takes as
    it is.  A window that reaches into the neighbouring sequence does so exactly where the per-sequence layout
    had padding, which ``table`` masks.  ~1.6x the unfold + matmul form at T=200, +-40 (no (span / block)-fold
    K/V copies).  q (S, n * block, D) padded to whole blocks; k, v (S, T, D); table (H or 1, n, block, span), the
    sequences S ordered (..., H) -> (S, n * block, D).
    """
    n_blocks, block, span = table.shape[-3:]
    d = q.shape[-1]
    windows = q.shape[0] * n_blocks

    def strided_windows(x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, n_blocks * block - t)).reshape(-1, d)  # sequences end to end
        x = F.pad(x, (0, 0, half, half))  # a fresh contiguous tensor: the strides below are its own
        return x.as_strided((windows, span, d), (block * d, d, 1))

    sim = torch.bmm(q.reshape(windows, block, d), strided_windows(k).transpose(1, 2))  # (W, block, span)
    sim.view(-1, table.shape[0], n_blocks, block, span).add_(table)
    out = torch.bmm(sim.softmax(dim=-1), strided_windows(v))
    return out.view(-1, n_blocks * block, d)


def windowed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    half: Optional[int],
    bias_fn: Optional[BiasFn] = None,
    block_size: Optional[int] = None,
    backend: AttnBackend = "math",
) -> Tensor:
    """Attention of frame i over frames j with ``|i - j| <= half`` (all frames if ``half`` is None).

    q, k, v: (..., H, T, D), q already scaled and rotary already applied (absolute positions).
    bias_fn maps relative positions ``j - i`` (I, J) to an additive bias (H, I, J).
    Returns (..., H, T, D).  Memory O(T * (block + 2*half)); block defaults to ``max(half, 1)``.
    """
    t = q.shape[-2]
    device = q.device
    if half is None or half >= t - 1:
        bias = bias_fn(relative_positions(t, t, device=device)) if bias_fn is not None else None
        return dense_attention(q, k, v, bias, backend=backend)

    # blocks no longer than half + 1 guarantee that every padded query row still sees a real key
    block = max(1, min(block_size or half, half + 1, t))
    n_blocks = math.ceil(t / block)
    span = block + 2 * half
    pad_q = n_blocks * block - t

    q_blocks = F.pad(q, (0, 0, 0, pad_q)).unflatten(-2, (n_blocks, block))  # (..., H, n, block, D)

    def windows(x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, half, half + pad_q))  # (..., H, n*block + 2*half, D)
        return x.unfold(-2, span, block).transpose(-1, -2)  # (..., H, n, span, D)

    k_win, v_win = windows(k), windows(v)

    rel = relative_positions(block, span, key_offset=-half, device=device)  # (block, span), j - i
    key_pos = torch.arange(n_blocks, device=device)[:, None] * block - half + torch.arange(span, device=device)
    valid = (rel.abs() <= half)[None] & ((key_pos >= 0) & (key_pos < t))[:, None, :]  # (n, block, span)
    bias = (bias_fn(rel)[:, None] if bias_fn is not None else q.new_zeros(1, 1, block, span)).to(q.dtype)

    def band_bias(part: slice) -> Tensor:
        """Bias and band of the blocks `part` as one additive table (H or 1, g, block, span): one pass over the
        scores instead of three, built per group so it stays O(group), not O(T)."""
        return bias.masked_fill(~valid[part], float("-inf"))

    heads = q.shape[-3]
    group = max(1, QUERY_CHUNK // block)
    # sampling: chunks of whole sequences (all heads of one) whose scores, and the table, are no larger than one group
    # of blocks of all sequences would be; a few very long sequences (PBNet on long audio) keep the grouped path
    per_chunk = q.shape[:-2].numel() * group // n_blocks // heads * heads
    if backend == "math" and not torch.is_grad_enabled() and per_chunk > 0:
        table = band_bias(slice(None))
        parts = [_flat_windows(*parts, table, half=half, t=t)
                 for parts in zip(*(x.flatten(0, -3).split(per_chunk) for x in (q_blocks.flatten(-3, -2), k, v)))]
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out.view(*q.shape[:-2], n_blocks * block, q.shape[-1])[..., :t, :]
    if backend == "sdpa":
        # fold (H, n) into one axis so (N, H*n, L, D) inputs can use the fused CUDA kernels
        out = F.scaled_dot_product_attention(q_blocks.flatten(-4, -3), k_win.flatten(-4, -3), v_win.flatten(-4, -3),
                                             attn_mask=band_bias(slice(None)).expand(heads, -1, -1, -1).flatten(0, 1),
                                             scale=1.0)
        out = out.unflatten(-3, (heads, n_blocks))
    else:
        # groups of blocks covering ~QUERY_CHUNK frames: only one group's windowed K/V copies and
        # scores exist at a time, so long sequences stay O(T * w) with a small constant
        outs = []
        for first in range(0, n_blocks, group):
            part = slice(first, first + group)
            sim = q_blocks[..., part, :, :] @ k_win[..., part, :, :].transpose(-1, -2)  # (..., H, g, block, span)
            sim += band_bias(part)  # every row keeps at least one finite score (block <= half + 1)
            outs.append(sim.softmax(dim=-1) @ v_win[..., part, :, :])
        out = torch.cat(outs, dim=-3)
    return out.flatten(-3, -2)[..., :t, :]
