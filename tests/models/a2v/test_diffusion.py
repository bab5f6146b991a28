"""Schedules, losses and samplers of dawn_train/models/a2v/diffusion.py with tiny denoisers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dawn_train.models.a2v import A2VFDM, GaussianDiffusion, Unet3D, batch_quantile, beta_schedule

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is faster


class TinyDenoiser(nn.Module):
    """Per-pixel linear map of [x_t | context] plus a condition term; counts its calls."""

    def __init__(self, in_ch=5, out_ch=3, cond_dim=2):
        super().__init__()
        self.proj = nn.Conv3d(in_ch, out_ch, 1)
        self.cond = nn.Linear(cond_dim, out_ch)
        self.calls = 0

    def forward(self, x, t, cond=None, null_cond_mask=None):
        self.calls += 1
        out = self.proj(x) + (t.float() / 1000).view(-1, 1, 1, 1, 1)
        if cond is not None:
            cond = cond.masked_fill(null_cond_mask[..., None], 0.0)
            out = out + self.cond(cond).permute(0, 2, 1)[..., None, None]
        return out


def _diffusion(**kw):
    torch.manual_seed(0)
    return GaussianDiffusion(TinyDenoiser(), **kw)


def test_schedules_by_name():
    b = beta_schedule("cosine", 1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert abs(b[0].item() - 4.13e-5) < 1e-7 and b[-1].item() == pytest.approx(0.9999)
    lin = beta_schedule("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        beta_schedule("sigmoidish", 10)
    d = GaussianDiffusion(TinyDenoiser(), beta_schedule_name="linear", timesteps=50)
    assert d.betas.dtype == torch.float32 and d.num_timesteps == 50


@pytest.mark.parametrize("n", [1, 2, 7, 100, 3 * 12 * 8 * 8])
def test_batch_quantile_equals_torch(n):
    x = torch.randn(3, n).abs()
    torch.testing.assert_close(batch_quantile(x, 0.9), torch.quantile(x, 0.9, dim=-1), rtol=0, atol=0)


def test_dynamic_threshold():
    d = _diffusion()
    x0 = torch.cat([torch.full((1, 3, 2, 4, 4), 0.5), torch.linspace(-4, 4, 96).view(1, 3, 2, 4, 4)])
    out, raw = d.threshold(x0)
    torch.testing.assert_close(out[0], x0[0])  # percentile < 1 -> unchanged
    s = raw[1].item()
    assert s > 1 and out[1].abs().max().item() == pytest.approx(1.0)
    torch.testing.assert_close(out[1], x0[1].clamp(-s, s) / s)


def test_ddim_grids():
    d = _diffusion()
    official = d.ddim_timesteps()
    assert official[:3] == [952, 904, 857] and official[-2:] == [47, 0] and len(official) == 21
    std = d.ddim_timesteps(convention="standard")
    assert std[0] == 999 and std[-1] == -1 and len(std) == 21
    with pytest.raises(ValueError):
        GaussianDiffusion(TinyDenoiser(), ddim_convention="odd")


def test_p_losses_unreduced_and_mask():
    d = _diffusion(null_cond_prob=0.5)
    x0 = torch.randn(2, 3, 6, 4, 4)
    ctx = torch.randn(2, 2, 4, 4)
    cond = torch.randn(2, 6, 2)
    out = d(x0, ctx, cond, generator=torch.Generator().manual_seed(0))
    assert out["loss"].shape == x0.shape and out["null_cond_mask"].shape == (2, 6) and out["t"].shape == (2,)
    eps = d.denoise_fn(d.model_input(out["x_noisy"], ctx), out["t"], cond=cond, null_cond_mask=out["null_cond_mask"])
    torch.testing.assert_close(out["loss"], (out["noise"] - eps) ** 2)
    out["loss"].mean().backward()
    assert d.denoise_fn.proj.weight.grad is not None
    d1 = _diffusion(loss_type="l1")
    r = d1.p_losses(x0, torch.tensor([0, 999]), ctx, cond, noise=torch.zeros_like(x0))
    assert (r["loss"] >= 0).all() and r["pred_x0"].abs().max() <= 1 + 1e-6


def test_pred_x0_objective():
    """objective="pred_x0": the loss is the x0 error of the denoiser output, and the sampler's eps turns back
    into exactly that output (so DDIM's x0 is the network's x0)."""
    d = _diffusion(objective="pred_x0")
    x0 = torch.randn(2, 3, 6, 4, 4).clamp(-1, 1)
    ctx, cond = torch.randn(2, 2, 4, 4), torch.randn(2, 6, 2)
    t = torch.tensor([10, 900])
    out = d.p_losses(x0, t, ctx, cond, generator=torch.Generator().manual_seed(0))
    pred = d.denoise_fn(d.model_input(out["x_noisy"], ctx), t, cond=cond, null_cond_mask=out["null_cond_mask"])
    torch.testing.assert_close(out["loss"], (x0 - pred) ** 2)
    torch.testing.assert_close(out["pred_x0"], d.threshold(pred)[0])
    eps = d.predict_noise(out["x_noisy"], t, ctx, cond)
    full = d.denoise_fn(d.model_input(out["x_noisy"], ctx), t, cond=cond, null_cond_mask=torch.zeros(2, 6).bool())
    torch.testing.assert_close(d.predict_start_from_noise(out["x_noisy"], t, eps), full, rtol=1e-4, atol=1e-4)
    assert d.sample(ctx, cond, generator=torch.Generator().manual_seed(1)).shape == (2, 3, 6, 4, 4)
    with pytest.raises(ValueError, match="objective"):
        _diffusion(objective="pred_v")


@pytest.mark.parametrize("convention", ["official", "standard"])
def test_ddim_generator_determinism_and_noise_replay(convention):
    d = _diffusion(sampling_timesteps=5, ddim_convention=convention)
    ctx, cond = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 2)
    a = d.sample(ctx, cond, generator=torch.Generator().manual_seed(3))
    b = d.sample(ctx, cond, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    g = torch.Generator().manual_seed(3)
    noises = [torch.randn(2, 3, 3, 4, 4, generator=g) for _ in range(6)]
    seen = []
    c = d.sample(ctx, cond, noise=noises, progress=lambda it: list(it), callback=seen.append)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert [s["step"] for s in seen] == list(range(5)) and seen[0]["x_t"].shape == (2, 3, 3, 4, 4)


def test_cond_scale_calls_twice():
    d = _diffusion(sampling_timesteps=4)
    ctx, cond = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2)
    d.denoise_fn.calls = 0
    d.sample(ctx, cond, cond_scale=1.0)
    assert d.denoise_fn.calls == 4
    d.sample(ctx, cond, cond_scale=2.0)
    assert d.denoise_fn.calls == 12


def test_a2v_model_long_sequence_with_window():
    """One non-autoregressive pass over 200 frames with local temporal attention."""
    torch.manual_seed(0)
    unet = Unet3D(dim=8, dim_mults=(1, 2), channels=3 + 6 + 16, cond_aud=4, cond_pose=2, cond_eye=2,
                  attn_heads=2, attn_dim_head=4, init_kernel_size=3, resnet_groups=4, window_size=20)
    model = A2VFDM(GaussianDiffusion(unet, sampling_timesteps=2)).eval()
    ref, cond = torch.randn(1, 6, 4, 4), torch.randn(1, 200, 8)
    box = torch.tensor([[2.0, 10.0, 3.0, 12.0, 16.0, 16.0]])
    x = model.sample(ref, box, cond, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 3, 200, 4, 4) and torch.isfinite(x).all()
    out = model.train()(torch.randn(2, 3, 7, 4, 4), ref.repeat(2, 1, 1, 1), box.repeat(2, 1), cond[:, :7].repeat(2, 1, 1))
    out["loss"].mean().backward()
    assert model.face_loc_emb.conv1.weight.grad is not None  # the encoder is trained and saved with the model
    assert {k.split(".")[0] for k in model.state_dict()} == {"diffusion", "face_loc_emb"}



def test_sample_uses_the_callers_step_count():
    """A model configured for 1000 ancestral steps samples with DDIM when the caller asks for 3 steps (and the
    other way round), instead of its own setting winning."""
    d = _diffusion(sampling_timesteps=1000)
    ctx, cond = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2)
    d.sample(ctx, cond, sampling_timesteps=3)
    assert d.denoise_fn.calls == 3
    d = _diffusion(sampling_timesteps=3)
    d.sample(ctx, cond)
    assert d.denoise_fn.calls == 3
