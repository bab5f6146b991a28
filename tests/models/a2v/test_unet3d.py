"""Shapes, conditioning, windows and the official layout of dawn_train/models/a2v/unet3d.py."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from dawn_train.models.a2v import GaussianDiffusion, Unet3D

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is faster


PKG = Path(__file__).resolve().parents[3] / "dawn_train" / "models" / "a2v"
TINY = dict(dim=8, dim_mults=(1, 2), channels=3 + 5, cond_aud=4, cond_pose=3, cond_eye=2, attn_heads=2,
            attn_dim_head=4, init_kernel_size=3, resnet_groups=4)


def _inputs(b=2, t=5, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, TINY["channels"], t, hw, hw, generator=g)
    cond = torch.randn(b, t, 9, generator=g)
    return x, torch.tensor([3, 700][:b]), cond


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Unet3D(**TINY).eval()


@pytest.mark.parametrize("t", [1, 4, 7])
def test_shape_and_dynamic_frames(tiny, t):
    x, time, cond = _inputs(t=t)
    with torch.no_grad():
        out = tiny(x, time, cond)
    assert out.shape == (2, 3, t, 8, 8)
    with pytest.raises(ValueError):
        tiny(x, time, cond[:, :1] if t > 1 else torch.cat([cond, cond], 1))


def test_null_condition(tiny):
    x, time, cond = _inputs()
    with torch.no_grad():
        null = tiny(x, time, cond, null_cond_prob=1.0)
        torch.testing.assert_close(tiny(x, time, None), null, rtol=0, atol=0)
        torch.testing.assert_close(tiny(x, time, torch.zeros_like(cond)), null, rtol=0, atol=0)
        full = tiny(x, time, cond)
        assert (full - null).abs().max() > 1e-3
        mask = torch.zeros(2, 5, dtype=torch.bool)
        mask[0, 2] = True  # per-frame null condition
        part = tiny(x, time, cond, null_cond_mask=mask)
        cond2 = cond.clone()
        cond2[0, 2] = 0
        torch.testing.assert_close(part, tiny(x, time, cond2), rtol=0, atol=0)
        g = torch.Generator().manual_seed(1)
        a = tiny(x, time, cond, null_cond_prob=0.5, generator=g)
        g = torch.Generator().manual_seed(1)
        torch.testing.assert_close(a, tiny(x, time, cond, null_cond_prob=0.5, generator=g), rtol=0, atol=0)
        cfg = tiny.forward_with_cond_scale(x, time, cond, cond_scale=3.0)
        torch.testing.assert_close(cfg, null + 3.0 * (full - null), rtol=1e-5, atol=1e-5)


def test_window_binding_and_not_binding():
    torch.manual_seed(0)
    full = Unet3D(**TINY).eval()
    x, time, cond = _inputs(t=9)
    with torch.no_grad():
        ref = full(x, time, cond)
        for size, conv in [(16, "total"), (8, "per_side"), (None, "total")]:
            full.window_size, full.window_convention = size, conv
            torch.testing.assert_close(full(x, time, cond), ref, rtol=0, atol=0)  # window >= T - 1 -> identical
        full.window_size, full.window_convention = 4, "total"  # +-2 frames
        assert (full(x, time, cond) - ref).abs().max() > 1e-4
        local = full(x, time, cond)
        full.window_size, full.window_convention = 2, "per_side"
        torch.testing.assert_close(full(x, time, cond), local, rtol=0, atol=0)


def test_training_window_and_sampling_window_are_separate():
    """`window_size` binds in eval mode (sampling), `train_window_size` in train mode; by default training attends
    over the whole clip, as the official code trains."""
    torch.manual_seed(0)
    unet = Unet3D(**TINY, window_size=4)
    x, time, cond = _inputs(t=9)
    assert unet.train().half_width() is None and unet.eval().half_width() == 2
    with torch.no_grad():
        sampled = unet.eval()(x, time, cond)
        unet.window_size = None
        full = unet(x, time, cond)
        unet.train()  # train mode, still no window: the full-attention output (dropout-free UNet)
        torch.testing.assert_close(unet(x, time, cond), full, rtol=0, atol=0)
        unet.train_window_size = 4
        torch.testing.assert_close(unet(x, time, cond), sampled, rtol=0, atol=0)


def test_learn_null_cond_and_final_activation():
    torch.manual_seed(0)
    m = Unet3D(**TINY, learn_null_cond=True, use_final_activation=True)
    assert m.null_cond_emb.shape == (1, 1, 9)
    x, time, cond = _inputs()
    out = m(x, time, cond, null_cond_prob=1.0)
    out.sum().backward()
    assert m.null_cond_emb.grad is not None and out[:, :2].abs().max() <= 1


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    a = Unet3D(**TINY, window_size=2)
    b = Unet3D(**TINY, window_size=2, use_checkpoint=True)
    b.load_state_dict(a.state_dict())
    x, time, cond = _inputs()
    for m in (a, b):
        m(x, time, cond).square().mean().backward()
    compared = 0
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=n)
            compared += 1
    assert compared > 0.9 * len(list(a.parameters()))


@pytest.mark.parametrize("window", [None, 4])
def test_fast_equals_reference_forward_chunked_and_grad(window):
    """The fast path (static context, fused cross-attention, banded attention over pixel/frame chunks) computes
    the reference (official) function: outputs without grad with chunks of a few pixels/frames, and gradients."""
    torch.manual_seed(0)
    ref = Unet3D(**TINY, implementation="reference", window_size=window, train_window_size=window)
    # a few pixels / frames per attention call
    fast = Unet3D(**TINY, implementation="fast", window_size=window, train_window_size=window, attn_chunk_mib=4096 / 2**20)
    fast.load_state_dict(ref.state_dict())
    x, time, cond = _inputs(t=9)
    context = torch.randn(2, TINY["channels"] - 3, 8, 8)
    repeated = torch.cat((x[:, :3], context[:, :, None].expand(-1, -1, 9, -1, -1)), dim=1)
    assert fast.position_chunk(9, 2, 4, "cpu") is None  # with grad: every activation is kept for backward anyway
    with torch.no_grad():
        assert fast.eval().position_chunk(9, 2, 4, "cpu") < 64 and fast.frame_chunk(64, 4, "cpu") < 9
        assert ref.eval().position_chunk(9, 2, 4, "cpu") is None
        expected = ref(repeated, time, cond)
        torch.testing.assert_close(fast(x[:, :3], time, cond, context=context), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast(repeated, time, cond), expected, rtol=1e-5, atol=1e-5)
    for model, inputs in ((ref, dict(x=repeated)), (fast, dict(x=x[:, :3], context=context))):
        model.train()(time=time, cond=cond, null_cond_prob=0.0, **inputs).square().mean().backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_attention_chunk_budget_by_device():
    """The no-grad chunks are sized by device type (bigger on CUDA, where each chunk costs kernel launches) unless
    attn_chunk_mib is given; the budget bounds the working set it sizes."""
    from dawn_train.models.a2v.unet3d import ATTN_CHUNK_MIB

    by_device, fixed = Unet3D(**TINY).eval(), Unet3D(**TINY, attn_chunk_mib=1).eval()
    with torch.no_grad():
        cpu, cuda = by_device.position_chunk(200, 40, 4, "cpu"), by_device.position_chunk(200, 40, 4, "cuda")
        assert cuda // cpu == ATTN_CHUNK_MIB["cuda"] // ATTN_CHUNK_MIB["cpu"] > 1
        assert by_device.frame_chunk(1024, 4, "cuda") > by_device.frame_chunk(1024, 4, "cpu")
        assert fixed.position_chunk(200, 40, 4, "cpu") == fixed.position_chunk(200, 40, 4, "cuda")
        per_pixel = 4 * 200 * (TINY["attn_heads"] * (40 + 80) + 4 * fixed.attn_hidden)
        assert fixed.position_chunk(200, 40, 4, "cpu") == 2**20 // per_pixel
        with by_device.chunks_sized_for("cuda"):  # a meta-device trace standing for a CUDA run
            assert by_device.position_chunk(200, 40, 4, "meta") == cuda
        assert by_device.attn_chunk_mib is None
    with pytest.raises(ValueError, match="attn_chunk_mib"):
        Unet3D(**TINY, attn_chunk_mib=0)


def test_implementation_is_checked():
    with pytest.raises(ValueError, match="implementation"):
        Unet3D(**TINY, implementation="turbo")


@pytest.mark.parametrize("key", ["a2v128", "a2v256"])
def test_official_layout_and_parameter_count(official_shapes, key):
    with torch.device("meta"):
        unet = Unet3D(dim=64, dim_mults=(1, 2, 4, 8), channels=275, cond_aud=1024, cond_pose=6, cond_eye=2,
                      attn_heads=8, attn_dim_head=32, init_kernel_size=7, window_size=80)
        diffusion = GaussianDiffusion(unet)
    ours = {k: list(v.shape) for k, v in diffusion.state_dict().items()}
    ref = official_shapes[key]["diffusion"]
    assert list(ours) == list(ref)  # names and order
    assert ours == ref
    assert sum(p.numel() for p in unet.parameters()) == 49_857_555  # includes the 16 shared rotary freqs
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == 49_857_555 - 16


def test_package_hygiene():
    allowed = {"torch", "einops", "numpy", "math", "typing", "__future__", "functools", "dataclasses", "contextlib", "types"}
    for path in PKG.glob("*.py"):
        src = path.read_text()
        assert len(src.splitlines()) < 400, path.name
        assert ".cuda(" not in src, path.name
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


def test_split_projections_on_cpu_fast_path_only():
    """The training form with q/k/v projected apart is a CPU lever (the fast path's); the reference path keeps the
    official single projection."""
    x = torch.zeros(1, 1)
    assert Unet3D(**TINY).split_qkv(x)
    assert not Unet3D(**TINY, implementation="reference").split_qkv(x)
    assert not Unet3D(**TINY).split_qkv(torch.zeros(1, 1, device="meta"))


def test_training_forward_projects_q_k_v_apart_on_cpu(monkeypatch):
    """Every temporal and linear spatial attention of a CPU training forward takes the split projection; without
    grad none does."""
    import dawn_train.models.a2v.attention as attention

    calls = []
    split = attention.split_projection
    monkeypatch.setattr(attention, "split_projection", lambda to_qkv, x: calls.append(type(to_qkv)) or split(to_qkv, x))
    unet = Unet3D(**TINY).train()
    x, time, cond = _inputs(t=5)
    unet(x, time, cond).sum().backward()
    temporal = sum(isinstance(m, attention.TemporalAttention) for m in unet.modules())
    spatial = sum(isinstance(m, attention.SpatialLinearAttention) for m in unet.modules())
    assert calls.count(torch.nn.Linear) == temporal > 0 and calls.count(torch.nn.Conv2d) == spatial > 0
    calls.clear()
    with torch.no_grad():
        unet.eval()(x, time, cond)
    assert not calls
