"""The LFG fast paths compute what the torch layers compute: GEMM convolutions for small maps, strided anti-alias
downsampling, 2x2 pooling as pairwise adds / maxima, and the in-place activations of the blocks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dawn_train.models.lfg import AntiAliasInterpolation2d, LatentFlowGenerator, ResBlock2d, Vgg19Features
from dawn_train.models.lfg.conv import Conv2d, conv2d_gemm
from dawn_train.models.lfg.pooling import AvgPool2d, MaxPool2d


@pytest.mark.parametrize("shape,out_ch,k", [((2, 32, 2, 2), 64, 3), ((1, 16, 1, 1), 64, 3), ((3, 8, 4, 5), 256, 3),
                                             ((2, 8, 3, 3), 128, 7)])
def test_gemm_conv_equals_conv2d_forward_and_backward(shape, out_ch, k):
    torch.manual_seed(0)
    pad = k // 2
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(out_ch, shape[1], k, k, requires_grad=True)
    b = torch.randn(out_ch, requires_grad=True)
    ours, ref = conv2d_gemm(x, w, b, (pad, pad)), F.conv2d(x, w, b, padding=pad)
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    g = torch.randn_like(ref)
    for a, c in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(conv2d_gemm(x, w, None, (pad, pad)), F.conv2d(x, w, None, padding=pad),
                               atol=1e-4, rtol=1e-5)


def test_gemm_conv_output_takes_an_in_place_relu_and_a_frozen_input():
    # VGG19 applies ReLU in place on the conv's output: at 1x1 the position-major result permuted back is already
    # contiguous, and a view returned by the custom function's forward would be refused by autograd
    torch.manual_seed(0)
    w = torch.randn(64, 16, 3, 3, requires_grad=True)
    for shape in [(1, 16, 1, 1), (2, 16, 2, 2)]:
        x = torch.randn(shape)  # an input without grad (the first layer's image): only weight and bias gradients
        b = torch.randn(64, requires_grad=True)
        ours = F.relu(conv2d_gemm(x, w, b, (1, 1)), inplace=True)
        ref = F.relu(F.conv2d(x, w, b, padding=1))
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
        g = torch.randn_like(ref)
        for a, c in zip(torch.autograd.grad(ours, (w, b), g), torch.autograd.grad(ref, (w, b), g)):
            torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-5)


def test_conv2d_takes_the_gemm_path_only_for_few_output_positions():
    conv = Conv2d(64, 512, kernel_size=3, padding=1)
    assert isinstance(conv, nn.Conv2d) and set(conv.state_dict()) == {"weight", "bias"}
    assert conv._use_gemm(torch.zeros(2, 64, 4, 4))  # 32 positions, 512 >= 8 * 32
    assert not conv._use_gemm(torch.zeros(2, 64, 8, 8))  # 128 positions
    assert not Conv2d(64, 512, 3, padding=1, stride=2)._use_gemm(torch.zeros(1, 64, 2, 2))
    assert not Conv2d(64, 512, 3, padding=1, groups=2)._use_gemm(torch.zeros(1, 64, 2, 2))
    assert not Conv2d(64, 512, 3, padding=1, padding_mode="reflect")._use_gemm(torch.zeros(1, 64, 2, 2))
    x = torch.randn(2, 64, 2, 2)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 0.125])
def test_strided_anti_alias_is_the_official_subsampled_blur(scale):
    torch.manual_seed(0)
    down = AntiAliasInterpolation2d(3, scale)
    x = torch.rand(2, 3, 40, 36)
    if scale == 1.0:
        assert down(x) is x
        return
    full = F.conv2d(F.pad(x, (down.ka, down.kb, down.ka, down.kb)), down.weight, groups=3)  # the official path
    assert torch.equal(down(x), full[:, :, ::down.step, ::down.step])


@pytest.mark.parametrize("scale", [0.75, 0.3, 0.0, -0.5, 2.0])
def test_anti_alias_refuses_a_scale_that_is_not_one_over_a_whole_number(scale):
    # 0.75 would silently keep every pixel (int(1 / 0.75) = 1): a region predictor at full size, not three quarters
    with pytest.raises(ValueError, match="scale_factor must be 1/n"):
        AntiAliasInterpolation2d(3, scale)


def test_a_region_predictor_scale_of_three_quarters_is_refused_by_name():
    with pytest.raises(ValueError, match=r"region_predictor_params\.scale_factor must be 1/n .* got 0\.75"):
        LatentFlowGenerator(num_regions=4, region_predictor_params={"block_expansion": 4, "max_features": 8,
                                                                     "num_blocks": 2, "scale_factor": 0.75})


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 5, 2, 2), (2, 4, 7, 6)])
def test_avg_pool_equals_torch(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    ours, ref = AvgPool2d(kernel_size=2)(x), F.avg_pool2d(x, 2)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)  # the sum order differs: last-bit differences
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 5, 2, 2), (2, 4, 7, 6)])
def test_max_pool_equals_torch_and_keeps_gradients_exact(shape):
    torch.manual_seed(0)
    x = torch.randn(shape).relu()  # ties at 0, as after VGG's ReLUs
    pool = MaxPool2d(kernel_size=2, stride=2)
    assert torch.equal(pool(x), F.max_pool2d(x, 2))
    xg = x.clone().requires_grad_()
    g = torch.randn_like(F.max_pool2d(x, 2))
    (ours,) = torch.autograd.grad(pool(xg), xg, g)  # with autograd: torch's kernel and its tie rule
    (ref,) = torch.autograd.grad(F.max_pool2d(xg, 2), xg, g)
    assert torch.equal(ours, ref)


def test_resblock_in_place_ops_keep_values_and_gradients():
    torch.manual_seed(0)
    block = ResBlock2d(8).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = block(x)

    def reference(x):  # the out-of-place formula
        h = block.conv1(F.relu(F.batch_norm(x, None, None, block.norm1.weight, block.norm1.bias, True)))
        h = block.conv2(F.relu(F.batch_norm(h, None, None, block.norm2.weight, block.norm2.bias, True)))
        return h + x

    ref = reference(x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    params = (x, *block.parameters())
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)


def test_vgg_in_place_relu_keeps_the_returned_features():
    torch.manual_seed(0)
    vgg = Vgg19Features().eval()
    x = torch.rand(1, 3, 32, 32)
    feats = vgg(x)
    # recompute every slice out of place from the same weights
    h, expected = (x - vgg.mean) / vgg.std, []
    for i, layer in enumerate(vgg.features):
        if isinstance(layer, nn.Conv2d):
            h = F.conv2d(h, layer.weight, layer.bias, padding=1)
        elif isinstance(layer, nn.ReLU):
            h = F.relu(h)
        else:
            h = F.max_pool2d(h, 2)
        if i + 1 in (2, 7, 12, 21, 30):
            expected.append(h)
    for a, b in zip(feats, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_frozen_vgg_under_autocast_runs_a_cached_low_precision_copy():
    """Under bf16 autocast the frozen VGG runs one bfloat16 copy of itself (autocast would cast its 13 M weights again
    at every call): the same features as autocast's own casting, gradients reach the input, the copy is outside the
    state dict, made without touching the global RNG, and made again when the weights change."""
    torch.manual_seed(0)
    vgg = Vgg19Features().eval()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = vgg._features((x - vgg.mean) / vgg.std)  # autocast casting the float32 weights itself
        state = torch.get_rng_state()
        features = vgg(x)
        assert torch.equal(state, torch.get_rng_state())
    for ours, ref in zip(features, expected):  # bfloat16 rounding apart (the tiny-map GEMM layers may differ: conv.py)
        assert ours.dtype == torch.bfloat16
        assert ((ours.float() - ref.float()).norm() / ref.float().norm()).item() < 0.02
    features[-1].float().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert set(vgg.state_dict()) == set(Vgg19Features().state_dict())  # no copy in checkpoints
    copy = vgg._copy_in(torch.bfloat16)
    with torch.no_grad():
        vgg.features[0].weight.mul_(2)  # weights changed (a load): the copy follows
    assert vgg._copy_in(torch.bfloat16) is not copy
    torch.testing.assert_close(vgg._copy_in(torch.bfloat16).features[0].weight, vgg.features[0].weight.bfloat16())
    assert all(f.dtype == torch.float32 for f in vgg(x.detach()))  # no autocast: float32 as before
