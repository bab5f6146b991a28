"""dawn_train/models/a2v/attention.py: the rotary embedding's two forms agree, and sampling under bf16 autocast
(what `bf16-mixed` runs) keeps the rotation out of complex bfloat16, which CUDA has no kernels for."""
from __future__ import annotations

import pytest
import torch

from dawn_train.models.a2v.attention import Attention, RotaryEmbedding

pytestmark = pytest.mark.usefixtures("one_thread")


def test_complex_rotation_equals_the_pairwise_one():
    rotary = RotaryEmbedding(16)
    x = torch.randn(3, 2, 11, 16)
    assert rotary.can_rotate_complex(x, 16)
    pairwise = rotary.rotate(x.double()).float()  # float64 takes the same complex path: check against the real form
    rotary_real = RotaryEmbedding(16)
    rotary_real.can_rotate_complex = lambda *_: False
    torch.testing.assert_close(rotary.rotate(x), rotary_real.rotate(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pairwise, rotary_real.rotate(x), atol=1e-5, rtol=1e-5)


def test_sampling_under_bf16_autocast_rotates_in_a_real_dtype(monkeypatch):
    torch.manual_seed(0)
    attention = Attention(32, heads=2, dim_head=16, rotary_emb=RotaryEmbedding(16)).eval()
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        reference = attention(x)
    complex_dtypes = []
    turns = RotaryEmbedding.turns

    def spy(self, t, tensor):
        complex_dtypes.append(tensor.dtype)
        return turns(self, t, tensor)

    monkeypatch.setattr(RotaryEmbedding, "turns", spy)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(x)
    assert torch.bfloat16 not in complex_dtypes  # torch.polar / complex bf16 raise on CUDA
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)
    with torch.no_grad():  # float32 sampling still takes the one-product complex path
        attention(x)
    assert complex_dtypes[-1] == torch.float32
