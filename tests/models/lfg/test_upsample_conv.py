"""Nearest x2 upsampling + 3x3 conv as four 2x2 phase convolutions: the same function as the torch layers, used by
UpBlock2d where it is faster (CPU, larger maps) and nowhere else."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dawn_train.models.lfg import UpBlock2d, upsample_conv
from dawn_train.models.lfg.upsample_conv import upsample_conv3x3


def reference(x, weight, bias):
    return F.conv2d(F.interpolate(x, scale_factor=2), weight, bias, padding=1)


@pytest.mark.parametrize("shape,out_channels", [((2, 8, 16, 16), 4), ((1, 5, 7, 11), 6), ((3, 16, 1, 1), 8),
                                                ((2, 3, 2, 9), 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_phase_convolutions_equal_the_upsample_and_conv(shape, out_channels, with_bias):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    weight = torch.randn(out_channels, shape[1], 3, 3, requires_grad=True)
    bias = torch.randn(out_channels, requires_grad=True) if with_bias else None
    ours, ref = upsample_conv3x3(x, weight, bias), reference(x, weight, bias)
    assert ours.shape == ref.shape == (shape[0], out_channels, 2 * shape[2], 2 * shape[3])
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    inputs = (x, weight) + ((bias,) if with_bias else ())
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_each_phase_kernel_sums_the_taps_that_land_on_one_low_resolution_pixel():
    weight = torch.arange(9.0).view(1, 1, 3, 3)  # taps w[r, c] = 3 r + c
    kernels = upsample_conv.phase_weights(weight)[:, 0]  # (4, 2, 2), phases (0,0), (0,1), (1,0), (1,1)
    # phase (0, 0) reads rows (i-1, i) with taps (w0, w1 + w2), columns likewise
    assert kernels[0].tolist() == [[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]]
    assert kernels[3].tolist() == [[0 + 1 + 3 + 4, 2 + 5], [6 + 7, 8]]
    assert kernels.sum((1, 2)).tolist() == [36.0] * 4  # every tap is used once per phase


def test_up_block_takes_the_phase_path_on_larger_cpu_maps_only(monkeypatch):
    block = UpBlock2d(8, 4)
    side = int(upsample_conv.MIN_POSITIONS**0.5)
    assert block.uses_phases(torch.zeros(1, 8, side, side))
    assert not block.uses_phases(torch.zeros(1, 8, side // 2, side // 2))
    assert not block.uses_phases(torch.zeros(1, 8, side, side, device="meta"))  # measured on CPUs only
    x = torch.zeros(1, 8, side, side)
    assert not UpBlock2d(8, 4, kernel_size=5, padding=2).uses_phases(x)
    for other in (dict(padding="same"), dict(dilation=2, padding=2), dict(padding_mode="reflect"), dict(groups=2)):
        odd = UpBlock2d(8, 4)
        odd.conv = type(odd.conv)(8, 4, 3, **{"padding": 1, **other})
        assert not odd.uses_phases(x), other
    assert not block.uses_phases(torch.zeros(1, 8, 2, side, side))  # not a 4-D map
    # the phase path reads the conv's weights without calling it: a conv with hooks or wrapped (activation
    # checkpointing) keeps its own call
    handle = block.conv.register_forward_hook(lambda *args: None)
    assert not block.uses_phases(x)
    handle.remove()
    assert block.uses_phases(x)
    wrapped = copy.deepcopy(block)
    wrapped.conv = torch.nn.Sequential(wrapped.conv)
    assert not wrapped.uses_phases(x)
    calls = []
    monkeypatch.setattr("dawn_train.models.lfg.blocks.upsample_conv3x3",
                        lambda *a: calls.append(1) or upsample_conv3x3(*a))
    block(torch.zeros(1, 8, side, side))
    block(torch.zeros(1, 8, 2, 2))
    assert len(calls) == 1


def test_up_block_trains_the_same_function_on_either_path(monkeypatch):
    torch.manual_seed(0)
    fast = UpBlock2d(16, 8).train()
    plain = copy.deepcopy(fast)
    x = torch.randn(2, 16, 16, 20)
    assert fast.uses_phases(x)
    out_fast = fast(x)
    monkeypatch.setattr("dawn_train.models.lfg.blocks.MIN_POSITIONS", 10**9)
    assert not plain.uses_phases(x)
    out_plain = plain(x)
    torch.testing.assert_close(out_fast, out_plain, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fast.norm.running_mean, plain.norm.running_mean)  # BN saw the same batch statistics
    grad = torch.randn_like(out_plain)
    out_fast.backward(grad)
    out_plain.backward(grad)
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_up_block_phase_path_under_bf16_autocast_and_with_bf16_weights(monkeypatch):
    torch.manual_seed(0)
    block = UpBlock2d(16, 8).eval()
    x = torch.randn(1, 16, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x)
        monkeypatch.setattr("dawn_train.models.lfg.blocks.MIN_POSITIONS", 10**9)
        plain = block(x)
    monkeypatch.undo()
    assert low.dtype == plain.dtype == torch.bfloat16
    exact = block(x)
    # the phase path is as close to float32 as the upsample + conv under autocast
    assert (low.float() - exact).abs().max() <= 1.5 * (plain.float() - exact).abs().max() + 1e-3
    # bf16 weights (DeepSpeed casts the module): the taps are summed in float32, so again no worse than the plain path
    weight, bias = block.conv.weight.detach(), block.conv.bias.detach()
    ref = reference(x.double(), weight.double(), bias.double())
    low_weights = upsample_conv3x3(x.bfloat16(), weight.bfloat16(), bias.bfloat16())
    plain_weights = reference(x.bfloat16(), weight.bfloat16(), bias.bfloat16())
    assert (low_weights.double() - ref).abs().max() <= 1.5 * (plain_weights.double() - ref).abs().max() + 1e-3
