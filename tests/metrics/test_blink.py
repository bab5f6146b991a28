"""Blink/s on sequences with known blinks; eye openness from face-mesh points."""
import numpy as np
import pytest
import torch

from dawn_train.data.prep.landmarks import EYE_POINTS, eye_openness_from_mesh
from dawn_train.metrics.blink import BlinkRate, count_blinks


def with_blinks(n: int, blinks: list[tuple[int, int]], open_level: float = 0.3) -> np.ndarray:
    """(n, 2) openness with eyes closed (0.05) on [start, start + length) for each blink."""
    seq = np.full((n, 2), open_level) + np.random.default_rng(n).normal(0, 0.01, size=(n, 2))
    for start, length in blinks:
        seq[start:start + length] = 0.05
    return seq


def test_count_blinks_threshold_and_min_duration():
    seq = with_blinks(100, [(10, 3), (40, 1), (70, 5)])  # the 1-frame dip is a glitch
    assert count_blinks(seq) == 2
    assert count_blinks(seq, min_frames=1) == 3
    assert count_blinks(seq, threshold=0.01) == 0  # absolute threshold below the closed level
    assert count_blinks(with_blinks(50, [(0, 3), (47, 3)])) == 2  # blinks cut by the clip edges
    assert count_blinks(seq[:, 0]) == 2  # one channel works too


def test_nan_frames_count_as_open():
    seq = with_blinks(60, [(20, 3)])
    seq[21] = np.nan
    assert count_blinks(seq) == 0  # the NaN splits the closure into two 1-frame runs
    seq = with_blinks(60, [(20, 4)])
    seq[:10] = np.nan
    assert count_blinks(seq) == 1


def test_blink_rate_pools_videos():
    metric = BlinkRate()
    a = with_blinks(250, [(20, 3), (100, 4), (200, 3)])  # 10 s, 3 blinks
    b = with_blinks(250, [(10, 3), (60, 3), (110, 3), (160, 3), (210, 3)])  # 10 s, 5 blinks
    metric.update(torch.tensor(np.stack([a, b])))
    assert float(metric.compute()) == pytest.approx(8 / 20)
    metric.update(torch.tensor(np.stack([a, b])), lengths=torch.tensor([125, 250]))  # a cut at 5 s: 2 blinks
    assert float(metric.compute()) == pytest.approx((8 + 2 + 5) / (20 + 5 + 10))


def test_eye_openness_from_mesh_points():
    points = np.zeros((478, 2))
    (lu, ll, la, lb), (ru, rl, ra, rb) = EYE_POINTS["left"], EYE_POINTS["right"]
    points[[la, lb]] = [[100, 50], [70, 50]]  # left eye 30 px wide
    points[[lu, ll]] = [[85, 44], [85, 53]]  # 9 px open -> 0.3
    points[[ra, rb]] = [[40, 50], [20, 50]]  # right eye 20 px wide
    points[[ru, rl]] = [[30, 49], [30, 50]]  # 1 px open -> 0.05
    np.testing.assert_allclose(eye_openness_from_mesh(points), [0.3, 0.05], rtol=1e-6)
    with pytest.raises(ValueError):
        eye_openness_from_mesh(points[:68])
