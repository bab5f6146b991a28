"""dawn_train/models/a2v/attention.py: the rotary embedding's two forms agree, sampling under bf16 autocast
(what `bf16-mixed` runs) keeps the rotation out of complex bfloat16, which CUDA has no kernels for, and the split
q/k/v projection of training computes the one projection's function and gradients."""
from __future__ import annotations

import pytest
import torch

from dawn_train.models.a2v.attention import (
    Attention,
    RelativePositionBias,
    RotaryEmbedding,
    SpatialLinearAttention,
    split_projection,
)

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


@pytest.mark.parametrize("complex_form, rotated", [(True, 16), (False, 16), (False, 8)],
                         ids=["complex", "real", "real-part-of-the-head"])
def test_rotation_with_the_query_scale_is_the_written_out_formula_values_and_gradients(complex_form, rotated):
    """Pairs (x0, x1) at position t turn by angle t * freq: (x0 cos - x1 sin, x1 cos + x0 sin), times the scale; the
    features past `dim` are only scaled.  Both forms, the whole head or a part of it (the real form alone: the
    complex one needs the whole head)."""
    rotary = RotaryEmbedding(rotated)
    if not complex_form:
        rotary.can_rotate_complex = lambda *_: False
    x = torch.randn(3, 2, 11, 16, dtype=torch.float64, requires_grad=True)
    angle = torch.arange(11, dtype=torch.float64)[:, None] * rotary.freqs.double()[None, :]
    x0, x1 = x[..., :rotated:2], x[..., 1:rotated:2]
    turned = torch.stack((x0 * angle.cos() - x1 * angle.sin(), x1 * angle.cos() + x0 * angle.sin()), dim=-1)
    expected = torch.cat((turned.flatten(-2), x[..., rotated:]), dim=-1) * 0.25
    out = rotary.rotate(x, 0.25)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    grad, = torch.autograd.grad((out * weights).sum(), x)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), x)
    torch.testing.assert_close(grad, expected_grad)


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


@pytest.mark.parametrize("layer, shape", [(torch.nn.Linear(12, 3 * 8, bias=False), (2, 5, 12)),
                                          (torch.nn.Conv2d(12, 3 * 8, 1, bias=False), (2, 12, 4, 3))])
def test_split_projection_is_the_projection_in_three(layer, shape):
    x = torch.randn(shape, requires_grad=True)
    parts = split_projection(layer, x)
    whole = layer(x).chunk(3, dim=1 if isinstance(layer, torch.nn.Conv2d) else -1)
    for part, expected in zip(parts, whole):
        torch.testing.assert_close(part, expected)
    upstream = [torch.randn_like(p) for p in parts]
    grads = torch.autograd.grad(parts, (x, layer.weight), upstream)
    expected = torch.autograd.grad(whole, (x, layer.weight), upstream)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("module", ["temporal", "spatial_linear"])
def test_split_qkv_trains_the_same_function(module):
    """``split_qkv`` (the fast path's training form) gives the outputs and every gradient of the one projection;
    without grad it is ignored (sampling keeps the one projection)."""
    torch.manual_seed(0)
    if module == "temporal":
        layer = Attention(16, heads=2, dim_head=8, rotary_emb=RotaryEmbedding(8))
        x, kwargs = torch.randn(3, 7, 16), dict(pos_bias=RelativePositionBias(heads=2), half=2)
    else:
        layer = SpatialLinearAttention(16, heads=2, dim_head=8)
        # channels-last, as the PreNorm hands it over (the split path makes the frames NCHW first)
        x, kwargs = torch.randn(3, 16, 2, 4, 4).contiguous(memory_format=torch.channels_last_3d), {}
    results = []
    for split in (False, True):
        layer.zero_grad()
        out = layer(x, split_qkv=split, **kwargs)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in layer.parameters() if p.grad is not None]))
    (out_one, grads_one), (out_split, grads_split) = results
    torch.testing.assert_close(out_split, out_one)
    assert len(grads_split) == len(grads_one) >= 2  # q/k/v and output projections at least
    for got, want in zip(grads_split, grads_one):
        torch.testing.assert_close(got, want)
