"""T5-style relative position buckets and the per-head bias table of the PBNet decoder."""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


def relative_position_bucket(relative_position: Tensor, num_buckets: int = 128, max_distance: int = 128) -> Tensor:
    """Map signed offsets ``j - i`` (any shape, int) to bucket ids in ``[0, num_buckets)`` (T5 scheme).

    Half of the buckets hold keys before the query (``j < i``), the other half keys at or after it
    (those get ``+num_buckets // 2``). Within a half, offsets below ``num_buckets // 4`` get their own
    bucket; larger ones share log-spaced buckets up to ``max_distance`` and saturate beyond.
    The float32 op order and the truncation toward zero (``.long()``) follow the official code, so
    the bucket ids match it exactly.
    """
    half = num_buckets // 2
    n = -relative_position  # positive when the key lies before the query
    bucket = (n < 0).long() * half
    n = n.abs()

    max_exact = half // 2
    is_small = n < max_exact
    # clamp only avoids log(0) = -inf (whose .long() is undefined); those entries take the exact branch
    n_large = n.clamp(min=1).float()
    large = max_exact + (
        torch.log(n_large / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """Learned additive attention bias ``table[bucket(j - i), head]`` for a sequence of ``n`` frames.

    In eval mode (the official behaviour) keys more than ``eval_window`` frames away get ``-1e8``,
    i.e. a local attention window of ``+-eval_window`` frames; ``eval_window=None`` turns it off.
    The window is not applied in training mode, as in the official code (training clips are 200
    frames, so it would never bite there anyway).
    """

    def __init__(self, *, heads: int = 4, num_buckets: int = 128, max_distance: int = 128,
                 eval_window: int | None = 200) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.eval_window = eval_window
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)  # official key name

    @property
    def window(self) -> int | None:
        """Frames attended on each side in the current mode: ``eval_window`` in eval mode, None (all) in training."""
        return None if self.training else self.eval_window

    @staticmethod
    def offsets(n: int, device: torch.device | None = None) -> Tensor:
        """(n, n) int64 with ``[i, j] = j - i``."""
        pos = torch.arange(n, dtype=torch.long, device=device)
        return rearrange(pos, "j -> 1 j") - rearrange(pos, "i -> i 1")

    def bucket_index(self, n: int, device: torch.device | None = None) -> Tensor:
        """(n, n) int64 with ``[i, j] = bucket(j - i)``."""
        return relative_position_bucket(self.offsets(n, device), self.num_buckets, self.max_distance)

    def offset_bias(self, rel: Tensor) -> Tensor:
        """Bias of offsets ``rel = j - i`` (I, J) int64: (H, I, J), without the window (the banded attention
        of the decoder masks the window itself and calls this once per block shape)."""
        bucket = relative_position_bucket(rel, self.num_buckets, self.max_distance)
        return rearrange(self.relative_attention_bias(bucket), "i j h -> h i j")

    def diagonal_buckets(self, n: int, device: torch.device | None = None) -> Tensor:
        """(2n - 1,) int64 bucket ids of the offsets ``-(n - 1) .. n - 1``, cached per (n, device)."""
        key = (n, device)
        cache = getattr(self, "_diagonal_buckets", None)
        if cache is None or cache[0] != key:
            rel = torch.arange(-(n - 1), n, dtype=torch.long, device=device)
            cache = (key, relative_position_bucket(rel, self.num_buckets, self.max_distance))
            self._diagonal_buckets = cache
        return cache[1]

    def forward(self, n: int) -> Tensor:
        """Bias for ``n`` frames: (H, n, n), to be added to the attention logits (O(n^2) memory: the decoder
        uses it for sequences within the window and in training, :meth:`offset_bias` in bands beyond).

        The bias only depends on j - i, so the table is looked up for the 2n - 1 diagonals and laid out as a
        Toeplitz matrix (the same values bit for bit as ``offset_bias(offsets(n))``): the embedding backward then
        sums 2n - 1 rows instead of n^2 (~5x cheaper forward + backward at n = 200).
        """
        device = self.relative_attention_bias.weight.device
        per_offset = self.relative_attention_bias(self.diagonal_buckets(n, device))  # (2n - 1, H), offset -(n-1) first
        # unfold: [h, s, j] = per_offset[s + j, h]; flipping s gives [h, i, j] = per_offset[(n - 1 - i) + j, h]
        bias = per_offset.t().unfold(1, n, 1).flip(1)
        if self.window is not None:
            rel = self.offsets(n, device)
            far = rel.abs() > self.window
            # additive -1e8 (not masked_fill) reproduces the official values bit for bit; the softmax
            # weight of those keys is exactly 0 in float32 either way
            bias = bias + far.to(bias.dtype) * -1e8
        return bias
