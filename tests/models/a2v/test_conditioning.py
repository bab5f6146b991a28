"""What A2V-FDM sees: the per-frame condition, its audio standardisation and pose scaling."""
import torch

from dawn_train.models.a2v.conditioning import condition


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

