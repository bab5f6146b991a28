"""Banded temporal attention (dawn_train/models/a2v/local_attention.py) against masked full attention."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dawn_train.models.a2v.attention import RelativePositionBias
from dawn_train.models.a2v.local_attention import (
    band_mask,
    dense_attention,
    half_width,
    relative_positions,
    windowed_attention,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is faster



def test_half_width_conventions():
    assert half_width(None) is None
    assert half_width(80) == 40 and half_width(81) == 40  # paper "80" = official win_width 40
    assert half_width(40, "per_side") == 40
    assert half_width(20) == 10 and half_width(200, "total") == 100
    with pytest.raises(ValueError):
        half_width(10, "both")
    with pytest.raises(ValueError):
        half_width(-1)


def test_band_mask_counts():
    m = band_mask(10, 2)
    assert m.sum(-1).tolist() == [3, 4, 5, 5, 5, 5, 5, 5, 4, 3]
    assert band_mask(4, None).all()


def _reference(q, k, v, bias_mod, half):
    t = q.shape[-2]
    rel = relative_positions(t, t)
    return dense_attention(q, k, v, bias_mod(rel), mask=band_mask(t, half))


CASES = [  # (T, half, block)
    (1, 0, None), (1, 3, None), (7, 0, None), (7, 1, None), (10, 3, None), (10, 3, 2), (11, 4, 3),
    (13, 5, None), (6, 5, None), (6, 9, None), (25, 2, 1), (30, 7, 8),
]


@pytest.mark.parametrize("t,half,block", CASES)
@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_windowed_equals_masked_full_forward_and_grad(t, half, block, backend):
    torch.manual_seed(t * 31 + half)
    heads, d = 2, 4
    bias_a = RelativePositionBias(heads=heads, num_buckets=32, max_distance=32)
    bias_b = RelativePositionBias(heads=heads, num_buckets=32, max_distance=32)
    bias_b.load_state_dict(bias_a.state_dict())
    base = [torch.randn(3, heads, t, d, dtype=torch.float64) for _ in range(3)]
    bias_a.double(), bias_b.double()
    qa, ka, va = (x.clone().requires_grad_() for x in base)
    qb, kb, vb = (x.clone().requires_grad_() for x in base)
    out = windowed_attention(qa, ka, va, half=half, bias_fn=bias_a, block_size=block, backend=backend)
    ref = _reference(qb, kb, vb, bias_b, half)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    for a, b in [(qa, qb), (ka, kb), (va, vb)]:
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(bias_a.relative_attention_bias.weight.grad,
                               bias_b.relative_attention_bias.weight.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("t,half,block", CASES + [(600, 40, None), (301, 20, 7)])
def test_windowed_sampling_path_equals_masked_full(t, half, block):
    """Without grad the math backend takes strided windows over sequences laid end to end (no K/V window copies),
    in chunks of whole sequences when T spans several groups of blocks: the long cases run 3+ chunks, where a
    window at a chunk's or a sequence's edge reaches into its neighbour and only the band table keeps it out."""
    torch.manual_seed(t * 17 + half)
    heads, d = 2, 4
    bias = RelativePositionBias(heads=heads, num_buckets=32, max_distance=32).double()
    q, k, v = (torch.randn(5, heads, t, d, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        out = windowed_attention(q, k, v, half=half, bias_fn=bias, block_size=block)
        torch.testing.assert_close(out, _reference(q, k, v, bias, half), atol=1e-10, rtol=0)
        plain = windowed_attention(q, k, v, half=half, block_size=block)  # no bias: a (1, n, block, span) table
        torch.testing.assert_close(plain, dense_attention(q, k, v, mask=band_mask(t, half)), atol=1e-10, rtol=0)


def test_windowed_float32_within_1e5():
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 8, 45, 32) for _ in range(3))
    bias = RelativePositionBias(heads=8, max_distance=32)
    out = windowed_attention(q, k, v, half=6, bias_fn=bias)
    assert (out - _reference(q, k, v, bias, 6)).abs().max() < 1e-5


class _MaxNumel(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.max = max(self.max, o.numel())
        return out


def test_windowed_memory_is_linear_in_frames():
    t, half = 2048, 4
    q, k, v = (torch.randn(1, 1, t, 2) for _ in range(3))
    bias = RelativePositionBias(heads=1, max_distance=32)
    with torch.no_grad(), _MaxNumel() as probe:
        windowed_attention(q, k, v, half=half, bias_fn=bias)
    assert probe.max <= t * (3 * half + 1) * 2  # O(T * w), never T^2 (= 4M)
