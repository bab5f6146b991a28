"""`prep/track.py` gap filling on a made-up face track (no mediapipe): short gaps interpolated between the
neighbouring found frames and held at the ends, a loss longer than `max_gap` fails the video ("face lost"),
as does a track without any face; and `prepare_video` fails a video that is too short."""
from __future__ import annotations

import numpy as np
import pytest

from dawn_train.data.prep import video
from dawn_train.data.prep.decode import VideoInfo
from dawn_train.data.prep.failures import PrepFailure
from dawn_train.data.prep.track import fill_gaps


def track(n: int) -> np.ndarray:
    """(n, 3, 2) points moving linearly: frame t holds t * (1, 2) + the point's offset."""
    t = np.arange(n, dtype=np.float32)[:, None, None]
    return t * np.array([1.0, 2.0], np.float32) + np.arange(6, dtype=np.float32).reshape(1, 3, 2)


def test_short_gaps_are_interpolated_and_ends_held():
    points = track(20)
    found = np.ones(20, bool)
    found[[0, 1, 5, 6, 7, 12, 19]] = False
    garbage = np.where(found[:, None, None], points, 1e6).astype(np.float32)  # missing rows hold junk
    filled = fill_gaps(garbage, found, max_gap=3)
    assert filled.dtype == np.float32 and filled.shape == points.shape
    inner = [5, 6, 7, 12]
    assert np.allclose(filled[inner], points[inner])  # linear motion: interpolation is exact
    assert np.array_equal(filled[found], points[found])  # found frames are untouched
    assert np.allclose(filled[[0, 1]], points[2]) and np.allclose(filled[19], points[18])  # ends held
    assert np.array_equal(garbage[5], np.full((3, 2), 1e6, np.float32))  # the input is not modified


def test_a_loss_of_max_gap_frames_is_filled_one_more_fails():
    found = np.ones(50, bool)
    found[10:22] = False  # 12 frames = 0.48 s
    assert np.isfinite(fill_gaps(track(50), found, max_gap=12)).all()
    found[22] = False  # 13 frames
    with pytest.raises(PrepFailure, match=r"face lost for 13 frames \(0\.40-0\.92 s; at most 12 are filled in\)"):
        fill_gaps(track(50), found, max_gap=12)
    with pytest.raises(PrepFailure, match="face lost for 4 frames"):  # a loss at the start counts too
        fill_gaps(track(10), np.arange(10) >= 4, max_gap=3)


def test_no_face_at_all_fails():
    with pytest.raises(PrepFailure, match="^no face found$"):
        fill_gaps(track(5), np.zeros(5, bool), max_gap=100)


def test_too_short_videos_fail_before_any_cropping(monkeypatch, tmp_path):
    """24 frames (0.96 s) with a face fail at the default 1 s; 25 pass that check (and stop at the next step,
    here made to raise, so nothing beyond the length check runs)."""
    monkeypatch.setattr(video, "probe", lambda source: VideoInfo(320, 240, 25.0, 0.0, 1.0))

    class Reached(Exception):
        pass

    def no_further(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(video, "fill_gaps", no_further)
    for n, outcome in ((24, PrepFailure), (25, Reached)):
        monkeypatch.setattr(video, "track_face", lambda source, n=n: (np.zeros((n, 478, 3), np.float32), np.ones(n, bool)))
        with pytest.raises(outcome) as raised:
            video.prepare_video(tmp_path / "clip.mp4", tmp_path / "out", "clip")
        if outcome is PrepFailure:
            assert str(raised.value) == "too short: 24 frames (0.96 s at 25 fps), need 1 s"
    assert not (tmp_path / "out").exists()
