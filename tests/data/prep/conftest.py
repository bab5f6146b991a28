"""Raw videos for the prep tests, made here: scikit-image's astronaut animated with known motion and
blinks (`data/prep/animate.py`), a video without a face, a corrupt file and one without audio."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dawn_train.data.schema import FPS
from dawn_train.data.synth import speech_audio
from dawn_train.data.video import encode_mp4

pytest.importorskip("mediapipe", reason="the prep extra (pip install 'dawn-train[prep]') is not installed")

N_FRAMES = 125  # 5 s
SIZE = 128  # crop side of the prepared videos
CANVAS = (240, 320)  # height, width: a small landscape "camera" frame


def speech(n_frames: int, seed: int = 0) -> np.ndarray:
    return speech_audio(np.random.default_rng(seed), n_frames / FPS, 150.0)


@pytest.fixture(scope="session")
def astronaut_photo() -> np.ndarray:
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[0:260, 100:330])  # head and shoulders, not square


@pytest.fixture(scope="session")
def animation(astronaut_photo):
    from dawn_train.data.prep.animate import PhotoAnimation, known_motion

    return PhotoAnimation(astronaut_photo, known_motion(N_FRAMES, canvas=CANVAS[0]), CANVAS)


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory, animation) -> Path:
    """A raw-video folder (name with a dot and a space): the animated astronaut (speech muxed), a video with
    no face, a corrupt mp4 and a video without an audio stream."""
    raw = tmp_path_factory.mktemp("raw") / "HDTF.v1 raw"
    raw.mkdir()
    (raw / "astro talk.mp4").write_bytes(encode_mp4(animation, audio=speech(N_FRAMES)))
    ramp = np.linspace(0, 255, CANVAS[1], dtype=np.float32)
    wall = np.broadcast_to(ramp[None, :, None], (*CANVAS, 3)).astype(np.uint8)
    (raw / "empty_room.mp4").write_bytes(encode_mp4(np.stack([wall] * 30), audio=speech(30, 1)))
    good = (raw / "astro talk.mp4").read_bytes()
    (raw / "broken.mp4").write_bytes(good[: len(good) // 3])  # moov atom at the end: cut off
    (raw / "silent_film.mp4").write_bytes(encode_mp4(np.stack([animation.frame(t) for t in range(30)])))
    return raw


@pytest.fixture(scope="session")
def prepared(raw_dir, tmp_path_factory) -> Path:
    """`dawn-train data prep` of `raw_dir` (one run for the session; a name with a dot and a space)."""
    from dawn_train.cli import main

    out = tmp_path_factory.mktemp("prepared") / "out dir.v2"
    assert main(["data", "prep", "--src", str(raw_dir), "--out", str(out), "--size", str(SIZE), "--quiet"]) == 0
    return out
