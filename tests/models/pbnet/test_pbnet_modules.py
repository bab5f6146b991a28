"""Unit tests of dawn_train.models.pbnet on tiny CPU configs (shapes, masks, sampling, losses, helpers)."""
from __future__ import annotations

import math

import pytest
import torch

from dawn_train.models.pbnet import (
    POSE_MAX,
    POSE_MIN,
    PBNet,
    PoseNormalizer,
    RotaryEmbedding,
    denormalize_pose,
    lengths_to_mask,
    normalize_pose,
    relative_position_bucket,
)
from dawn_train.models.pbnet.losses import (
    kl_loss,
    official_kl_weight,
    official_reg_loss,
    reconstruction_loss,
    smoothness_loss,
)

A = 8  # audio feature size of the tiny models


def tiny(**kw) -> PBNet:
    torch.manual_seed(0)
    args = dict(audio_dim=A, pose_latent_dim=8, audio_latent_dim=8, ff_size=16, num_heads=4, dim_head=8,
                max_len=1000)
    return PBNet(**{**args, **kw}).eval()


@pytest.fixture(scope="module")
def pose_model() -> PBNet:
    return tiny()


def inputs(b: int, t: int, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, d, generator=g), torch.randn(b, t, A, generator=g)


# ---- shapes and masks -----------------------------------------------------------------------------

@pytest.mark.parametrize("kw,d", [(dict(), 6), (dict(pos_dim=0, eye_dim=2), 2)])
def test_forward_shapes_and_padding(kw, d):
    model = tiny(**kw)
    x, audio = inputs(3, 17, d)
    mask = lengths_to_mask(torch.tensor([17, 9, 1]), 17)
    out = model(x, audio, mask)
    for key in ("mu", "logvar", "z"):
        assert out[key].shape == (3, 17, model.latent_dim)
    assert out["output"].shape == out["x_delta"].shape == (3, 17, d)
    assert (out["output"][~mask] == 0).all() and (out["output"][mask] != 0).any()
    assert torch.equal(out["x_delta"], x - x[:, :1])


def test_generate_shapes_lengths_and_mask_agree(pose_model):
    x, audio = inputs(3, 12)
    lengths = torch.tensor([12, 5, 8])
    a = pose_model.generate(x[:, :1], audio, lengths, generator=torch.Generator().manual_seed(1))
    b = pose_model.generate(x[:, 0], audio, mask=lengths_to_mask(lengths, 12), seed=1)  # (B, D) x0 accepted
    assert a.shape == (3, 12, 6) and torch.equal(a, b)
    mask = lengths_to_mask(lengths, 12)
    assert (a[~mask] == 0).all()
    # absolute output: frame 0 is x0 plus a (small, learned) delta, padded frames are zero
    delta = pose_model.decode(x[:, :1], pose_model.sample_latent(3, 12, generator=torch.Generator().manual_seed(1)),
                              audio, mask)
    torch.testing.assert_close(a, (delta + x[:, :1]) * mask[..., None])


def test_padding_content_matters_only_without_key_masking():
    """Official decoder: padded frames are still keys; mask_padded_keys=True makes padding inert."""
    x, audio = inputs(1, 12)
    z = torch.randn(1, 12, 8, generator=torch.Generator().manual_seed(3))
    padded_audio = torch.cat([audio[:, :7], 100 + audio[:, 7:]], dim=1)
    for flag in (False, True):
        model = tiny(mask_padded_keys=flag)
        alone = model.decode(x, z[:, :7], audio[:, :7])
        padded = model.decode(x, z, padded_audio, lengths_to_mask(torch.tensor([7]), 12))
        assert (padded[:, 7:] == 0).all()
        assert torch.allclose(padded[:, :7], alone, atol=1e-6) == flag


def test_generate_is_deterministic_for_a_seed(pose_model):
    x, audio = inputs(2, 10)
    run = lambda s: pose_model.generate(x[:, :1], audio, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert torch.equal(run(123), run(123))
    assert not torch.equal(run(123), run(124))
    assert torch.equal(run(123), pose_model.generate(x[:, :1], audio, seed=123))


def test_latent_is_drawn_in_official_order(pose_model):
    z = pose_model.sample_latent(2, 5, generator=torch.Generator().manual_seed(7))
    ref = torch.randn(5, 2, pose_model.latent_dim, generator=torch.Generator().manual_seed(7))  # CAE.generate
    assert torch.equal(z, ref.permute(1, 0, 2))


def test_long_generation_is_local_and_shift_equivariant(pose_model):
    """600 frames in one pass: frames only see neighbours through relative attention (+-200 per layer in
    eval mode), so there is no absolute-position drift and no seam to stitch."""
    t = 600
    x, audio = inputs(1, t)
    z = pose_model.sample_latent(1, t, generator=torch.Generator().manual_seed(0))
    full = pose_model.generate(x[:, :1], audio, z=z)
    assert full.shape == (1, t, 6) and torch.isfinite(full).all()
    # frame i depends on inputs within +-400 (layer-2 self-attention over layer-1 cross-attention):
    # dropping the first 100 frames leaves frames >= 500 unchanged up to float rounding
    crop = pose_model.generate(x[:, :1], audio[:, 100:], z=z[:, 100:])
    torch.testing.assert_close(crop[:, 400:], full[:, 500:], atol=1e-5, rtol=0)
    # and editing frames >= 450 cannot reach frame 0..49
    audio2 = audio.clone()
    audio2[:, 450:] += 5.0
    edited = pose_model.generate(x[:, :1], audio2, z=z)
    torch.testing.assert_close(edited[:, :50], full[:, :50], atol=1e-6, rtol=0)
    assert not torch.allclose(edited[:, 450:], full[:, 450:])


def test_eval_window_only_in_eval_mode(pose_model):
    bias = pose_model.decoder.time_rel_pos_bias_tgt
    assert bias(260)[:, 0, 201].max() < -1e7 and bias(260)[:, 0, 200].min() > -1e7
    bias.train()
    try:
        assert bias(260).min() > -1e7
    finally:
        bias.eval()


def test_dtype_follows_the_model():
    model = tiny().double()
    x, audio = inputs(2, 6)
    out = model.generate(x[:, :1].double(), audio.double(), seed=0)
    assert out.dtype == torch.float64


def test_two_heads_are_constructible():
    model = tiny(num_heads=2)  # the official RotaryEmbedding(2) fails here
    x, audio = inputs(1, 5)
    assert model.generate(x[:, :1], audio, seed=0).shape == (1, 5, 6)


def test_training_step_reaches_decoder_and_encoder():
    model = tiny().train()
    x, audio = inputs(2, 9)
    out = model(x, audio, generator=torch.Generator().manual_seed(0))
    loss = reconstruction_loss(out["output"], out["x_delta"]) + kl_loss(out["mu"], out["logvar"])
    loss.backward()
    for name in ("encoder.seqTransEncoder.layers.0.linear1.weight", "encoder.audioEmbedding.weight",
                 "decoder.ztimelinear.weight", "decoder.seqTransDecoder.decoder_layers.1.self_attn.to_qkv.weight",
                 "decoder.finallayer.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


# ---- building blocks ------------------------------------------------------------------------------

def test_relative_position_bucket():
    rel = torch.arange(-300, 301)
    b = relative_position_bucket(rel, num_buckets=128, max_distance=128)
    assert b.min() >= 0 and b.max() < 128
    n = -rel  # keys after the query (rel > 0) fall in the lower half
    exact = n.abs() < 32
    assert torch.equal(b[exact & (rel <= 0)], n[exact & (rel <= 0)])
    assert torch.equal(b[exact & (rel > 0)], 64 + n[exact & (rel > 0)].abs())
    assert (b[rel <= -128] == 63).all() and (b[rel >= 128] == 127).all()  # saturated beyond max_distance


def test_rotary_rotates_only_leading_dims_and_is_relative():
    rope = RotaryEmbedding(4)
    q = torch.randn(1, 1, 10, 32)
    rq = rope(q)
    assert torch.equal(rq[..., 4:], q[..., 4:])
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # same content at every position: q_i . k_j depends only on i - j
    v = torch.randn(32)
    same = rope(v.expand(1, 1, 10, 32))
    dots = same[0, 0] @ same[0, 0].T
    torch.testing.assert_close(torch.diagonal(dots, 2), torch.full((8,), dots[0, 2].item()))


# ---- losses ---------------------------------------------------------------------------------------

def test_kl_is_zero_for_standard_normal_and_positive_otherwise():
    zeros = torch.zeros(2, 5, 8)
    assert kl_loss(zeros, zeros) == 0
    assert kl_loss(zeros + 0.5, zeros) > 0 and kl_loss(zeros, zeros + 0.5) > 0
    # closed form for one element: 0.5 (sigma^2 + mu^2 - 1 - log sigma^2)
    mu, lv = torch.tensor([[[1.0]]]), torch.tensor([[[math.log(2.0)]]])
    torch.testing.assert_close(kl_loss(mu, lv), torch.tensor(0.5 * (2 + 1 - 1 - math.log(2.0))))
    mask = torch.tensor([[True, True, False, False, False]]).expand(2, 5)
    big = zeros.clone()
    big[:, 2:] = 10.0  # padded frames ignored with a mask
    assert kl_loss(big, zeros, mask) == 0


def test_reconstruction_masks_padded_frames():
    target = torch.randn(2, 6, 3)
    output = target.clone()
    output[1, 4:] += 100.0
    mask = lengths_to_mask(torch.tensor([6, 4]), 6)
    assert reconstruction_loss(output, target, mask) == 0
    assert reconstruction_loss(output, target) > 0


def test_smoothness_has_gradient_unlike_official_reg():
    output = torch.randn(2, 8, 6, requires_grad=True)
    target = torch.randn(2, 8, 6)
    mask = lengths_to_mask(torch.tensor([8, 5]), 8)
    for kw in (dict(), dict(target=target)):
        (grad,) = torch.autograd.grad(smoothness_loss(output, mask, **kw), output)
        assert grad.abs().sum() > 0
        assert (grad[1, 5:] == 0).all()  # pairs touching padded frames do not count
    assert not official_reg_loss(target).requires_grad  # ground truth only: nothing to optimise
    flat = torch.ones(1, 4, 2)
    assert smoothness_loss(flat) == 0 and smoothness_loss(flat, target=flat) == 0


def test_official_kl_schedule():
    assert official_kl_weight(5_000) == 0.0
    assert official_kl_weight(50_000) == pytest.approx(0.004)
    assert official_kl_weight(100_000) == pytest.approx(0.004 * 9 / 7)


# ---- normalisation --------------------------------------------------------------------------------

def test_pose_normalisation_round_trip():
    lo, hi = torch.tensor(POSE_MIN), torch.tensor(POSE_MAX)
    pose = torch.tensor([[10.0, -20.0, 3.0, 4.79e-4, 56.5, 64.9]])
    assert torch.equal(normalize_pose(lo), torch.zeros(6)) and torch.equal(normalize_pose(hi), torch.ones(6))
    torch.testing.assert_close(denormalize_pose(normalize_pose(pose)), pose)
    norm = PoseNormalizer()
    torch.testing.assert_close(norm.inverse(norm(pose)), pose)
    assert torch.equal(norm(pose), normalize_pose(pose)) and not norm.state_dict()
    with pytest.raises(ValueError):
        PoseNormalizer((0.0,), (0.0,))
