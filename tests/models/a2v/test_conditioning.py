"""What A2V-FDM sees: the per-frame condition, its audio standardisation and pose scaling."""
import pytest
import torch

from dawn_train.models.a2v.conditioning import condition, sampling_kwargs


def inputs(frames=5, audio_dim=4):
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(1, frames, audio_dim, generator=g) * 3.8 - 8.6  # log-mel-like: far below zero
    return audio, torch.randn(1, frames, 6, generator=g), torch.rand(1, frames, 2, generator=g), \
        torch.zeros(1, 6), torch.zeros(1, 2)


def test_condition_layout_and_deltas():
    audio, pose, blink, ref_pose, ref_blink = inputs()
    ref_pose = pose[:, 0]
    cond = condition(audio, pose, blink, ref_pose, ref_blink)
    assert cond.shape == (1, 5, 4 + 8)
    assert torch.equal(cond[..., :4], audio) and torch.equal(cond[0, 0, 4:10], torch.zeros(6))


def test_audio_standardisation_reaches_the_silu():
    audio, pose, blink, ref_pose, ref_blink = inputs(frames=400)
    raw = condition(audio, pose, blink, ref_pose, ref_blink)[..., :4]
    norm = condition(audio, pose, blink, ref_pose, ref_blink, audio_norm=(-8.6, 3.8))[..., :4]
    assert norm.mean().abs() < 0.2 and (norm.std() - 1).abs() < 0.1
    # SiLU is the first thing every condition part meets in the UNet; below -4 its slope is < 0.06, so there
    # raw log-mel values hardly move its output (nor get gradient)
    flat = -4.0
    assert (raw < flat).float().mean() > 0.8 and (norm < flat).float().mean() < 0.01


def test_pose_scale_multiplies_the_deltas():
    audio, pose, blink, ref_pose, ref_blink = inputs()
    scale = [0.1, 0.1, 0.1, 10.0, 0.2, 0.2]
    cond = condition(audio, pose, blink, ref_pose, ref_blink, pose_scale=scale)
    assert torch.allclose(cond[..., 4:10], pose * torch.tensor(scale))



def test_blink_scale_and_motion_shift():
    audio, pose, blink, ref_pose, ref_blink = inputs()
    cond = condition(audio, pose, blink, ref_pose, ref_blink, pose_scale=[0.5] * 6, blink_scale=8.0, motion_shift=3.0)
    assert torch.allclose(cond[..., 4:10], pose * 0.5 + 3.0) and torch.allclose(cond[..., 10:], blink * 8.0 + 3.0)
    assert torch.equal(cond[..., :4], audio)  # the audio is not shifted


def test_motion_shift_lets_silu_tell_both_directions_apart():
    # yaw deltas of -20..+20 degrees: raw, SiLU maps every turn beyond -5 degrees to within 0.04 of "no turn";
    # scaled by 0.1 and shifted by 3, SiLU is strictly increasing over the whole range
    yaw = torch.linspace(-20, 20, 81)
    pose = torch.zeros(1, 81, 6)
    pose[0, :, 0] = yaw
    blink, zeros = torch.zeros(1, 81, 2), torch.zeros(1, 81, 1)
    raw = torch.nn.functional.silu(condition(zeros, pose, blink, torch.zeros(1, 6), torch.zeros(1, 2))[0, :, 1])
    assert (raw[yaw <= -5] - raw[yaw == 0]).abs().max() < 0.04
    shifted = condition(zeros, pose, blink, torch.zeros(1, 6), torch.zeros(1, 2), pose_scale=[0.1] * 6, motion_shift=3.0)
    out = torch.nn.functional.silu(shifted[0, :, 1])
    assert (out.diff() > 1e-3).all()


def test_sampling_kwargs_add_guidance_only_when_it_guides():
    assert sampling_kwargs() == {} and sampling_kwargs(0.5) == {"eta": 0.5}
    assert sampling_kwargs(None, 1.5) == {"cond_scale": 1.5}
    with pytest.raises(ValueError, match="--guidance 0.0: the guidance scale must be > 0"):
        sampling_kwargs(None, 0.0)
