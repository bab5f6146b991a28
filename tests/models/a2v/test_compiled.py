"""torch.compile of the A2V-FDM fast path (what `dawn-train bench cases --compile` times) computes the reference
function: sampling calls (no grad, banded window) and a training step's gradients.  Slow: inductor generates and
builds C++ for every graph (about 12 minutes for this tiny UNet, forward and backward graphs, on 2 busy cores)."""
from __future__ import annotations

import pytest
import torch

from dawn_train.models.a2v import Unet3D

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TINY = dict(dim=8, dim_mults=(1, 2), channels=3 + 5, cond_aud=4, cond_pose=3, cond_eye=2, attn_heads=2,
            attn_dim_head=4, init_kernel_size=3, resnet_groups=4, window_size=4)


def test_compiled_fast_path_equals_eager_reference():
    torch._dynamo.reset()
    torch.manual_seed(0)
    reference = Unet3D(**TINY, implementation="reference")
    fast = Unet3D(**TINY, implementation="fast")
    fast.load_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 8, 8, generator=g)
    context = torch.randn(2, 5, 8, 8, generator=g)
    time, cond = torch.tensor([3, 700]), torch.randn(2, 9, 9, generator=g)
    repeated = torch.cat((x, context[:, :, None].expand(-1, -1, 9, -1, -1)), dim=1)
    compiled = torch.compile(fast)
    with torch.no_grad():
        expected = reference.eval()(repeated, time, cond)
        out = compiled.eval()(x, time, cond, context=context)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    reference.train()(repeated, time, cond, null_cond_prob=0.0).square().mean().backward()
    compiled.train()(x, time, cond, null_cond_prob=0.0, context=context).square().mean().backward()
    for (name, p), q in zip(reference.named_parameters(), fast.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
