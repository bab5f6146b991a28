"""models/a2v/conv.py: the UNet's Conv3d runs oneDNN on CPUs for inputs of any size, as the same function."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import profile

from dawn_train.models.a2v.conv import Conv3d

# (in, out, kernel, stride, padding), as the UNet uses them: Block.proj, res_conv, Downsample, init_conv
LAYERS = [(16, 16, (1, 3, 3), 1, (0, 1, 1)), (16, 32, 1, 1, 0), (16, 16, (1, 4, 4), (1, 2, 2), (0, 1, 1)),
          (7, 16, (1, 7, 7), 1, (0, 3, 3))]


def pair(layer: tuple) -> tuple[Conv3d, nn.Conv3d]:
    ours = Conv3d(*layer)
    torch_conv = nn.Conv3d(*layer)
    torch_conv.load_state_dict(ours.state_dict())  # the same parameters under the same names
    return ours, torch_conv


@pytest.mark.parametrize("layer", LAYERS)
def test_equals_torch_conv3d_forward_and_backward(layer):
    ours, torch_conv = pair(layer)
    x = torch.randn(1, layer[0], 12, 16, 16)
    grad = None
    outs, grads = [], []
    for conv in (ours, torch_conv):
        x_ = x.clone().requires_grad_()
        y = conv(x_)
        grad = torch.randn_like(y) if grad is None else grad
        y.backward(grad)
        outs.append(y.detach())
        grads.append((x_.grad, conv.weight.grad, conv.bias.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def kernels(conv: nn.Module, x: torch.Tensor) -> set[str]:
    with torch.no_grad(), profile() as prof:
        conv(x)
    return {e.key for e in prof.key_averages() if "conv" in e.key and e.key.startswith("aten::")}


def test_a_small_input_runs_onednn_where_torch_runs_its_native_kernel():
    """Batch 1 and 16 x 8 x 16 = 2048 <= 20480 elements: torch's heuristic picks its native im2col kernel."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    ours, torch_conv = pair(LAYERS[0])
    x = torch.randn(1, 16, 8, 16, 16)
    assert "aten::slow_conv3d_forward" in kernels(torch_conv, x)  # what the class exists for
    used = kernels(ours, x)
    assert "aten::mkldnn_convolution" in used and "aten::slow_conv3d_forward" not in used


def test_other_devices_and_precisions_take_torchs_own_path():
    ours, _ = pair(LAYERS[0])
    x = torch.randn(1, 16, 8, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed: autocast's bfloat16 convolution
        assert ours(x).dtype == torch.bfloat16
    meta = Conv3d(*LAYERS[0], device="meta")  # the memory estimate's traces
    assert meta(torch.empty(1, 16, 8, 16, 16, device="meta")).shape == (1, 16, 8, 16, 16)
    double = pair(LAYERS[0])[0].double()
    assert double(x.double()).dtype == torch.float64
