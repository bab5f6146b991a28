"""BAS on constructed beats: the score formula, kinematic beats, onset beats, the metric end to end."""
import numpy as np
import pytest
import torch

from dawn_train.metrics.bas import BAS, audio_beats, beat_align_score, motion_beats


def pose_with_slow_frames(n_frames: int = 101, period: int = 20) -> np.ndarray:
    """(n, 6) pose whose yaw speed is 1 + cos(2 pi t / period): slowest at t = 10, 30, 50, ..."""
    t = np.arange(n_frames)
    pose = np.zeros((n_frames, 6))
    pose[1:, 0] = np.cumsum(1 + np.cos(2 * np.pi * t[:-1] / period))
    pose[:, 3:] = np.random.default_rng(0).normal(size=(n_frames, 3))  # not in pose_dims: ignored
    return pose


def clicks(frames: list[int], n_frames: int = 101) -> np.ndarray:
    """16 kHz audio, silence with a 10 ms noise burst at the start of each listed 25-fps frame."""
    rng = np.random.default_rng(1)
    audio = np.zeros(n_frames * 640)
    for f in frames:
        audio[f * 640: f * 640 + 160] += rng.normal(0, 0.5, 160)
    return audio


def test_score_formula():
    # motion beats 10 and 20; nearest audio beats at distance 0 and 3; sigma 3 -> exp(-9 / 18)
    assert beat_align_score([10, 20], [10, 23, 60]) == pytest.approx((1 + np.exp(-0.5)) / 2)
    # over audio beats (Bailando's loop): distances 0, 3, 40
    want = (1 + np.exp(-0.5) + np.exp(-1600 / 18)) / 3
    assert beat_align_score([10, 20], [10, 23, 60], over="audio") == pytest.approx(want)
    assert beat_align_score([5], [], sigma=3) == 0.0
    assert np.isnan(beat_align_score([], [1, 2]))


def test_motion_beats_are_speed_minima():
    pose = pose_with_slow_frames()[:, :3]
    np.testing.assert_array_equal(motion_beats(pose, smooth=0), [10, 30, 50, 70, 90])
    np.testing.assert_array_equal(motion_beats(pose, smooth=5), [10, 30, 50, 70, 90])


def test_clips_shorter_than_the_smoothing_window_have_no_motion_beats():
    """Under a 5-frame Gaussian a 4-frame clip's 3 speeds come out equal up to rounding, and a rounding difference once
    made a "beat" (this pose did, at frame 1); clips shorter than the window have none, so BAS skips them."""
    pose = np.array([[1.0, -0.62, 1.82], [-1.32, -0.66, 0.94], [0.05, 2.0, 0.19], [-0.63, -0.38, -1.09]])
    assert len(motion_beats(pose, smooth=5)) == 0
    assert len(motion_beats(pose_with_slow_frames()[:11, :3], smooth=5)) == 0  # 10 speeds < 11-sample window
    metric = BAS()
    metric.update(torch.tensor(pose)[None], torch.tensor(clicks([2]))[None, : 4 * 640])
    assert int(metric.n) == 0 and int(metric.n_skipped) == 1


def test_audio_beats_at_onsets():
    beats = audio_beats(clicks([12, 30, 47, 71, 90]))
    assert set([12, 30, 47, 71, 90]) <= set(beats.tolist())
    assert len(beats) == 5


def test_metric_aligned_vs_shifted():
    pose = torch.tensor(pose_with_slow_frames())[None]
    aligned, shifted = BAS(), BAS()
    aligned.update(pose, torch.tensor(clicks([10, 30, 50, 70, 90]))[None])
    shifted.update(pose, torch.tensor(clicks([20, 40, 60, 80]))[None])
    assert float(aligned.compute()) == pytest.approx(1.0)
    assert float(shifted.compute()) == pytest.approx(np.exp(-100 / 18), abs=1e-6)


def test_metric_precomputed_beats_and_skips():
    metric = BAS()
    metric.update(beats=[([10, 20], [10, 23]), ([], [5]), ([7], [7])])
    assert int(metric.n) == 2 and int(metric.n_skipped) == 1
    assert float(metric.compute()) == pytest.approx(((1 + np.exp(-0.5)) / 2 + 1) / 2)
    with pytest.raises(ValueError):
        metric.update(torch.zeros(1, 10, 6), torch.zeros(2, 100))
