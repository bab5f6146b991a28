"""Raw videos for the prep tests, made here: scikit-image's astronaut animated with known motion and
blinks (`data/prep/animate.py`), and videos that must fail: no face, corrupt, no audio, too short, face lost.  The modules
that need mediapipe say so at their top (`tests.conftest.require_module`: skipped locally, failed in CI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dawn_train.data.schema import FPS
from dawn_train.data.synth import speech_audio
from dawn_train.data.video import encode_mp4

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
    no face, a corrupt mp4, a video without an audio stream, one too short and one whose face leaves for
    longer than prep fills in."""
    raw = tmp_path_factory.mktemp("raw") / "HDTF.v1 raw"
    raw.mkdir()
    (raw / "astro talk.mp4").write_bytes(encode_mp4(animation, audio=speech(N_FRAMES)))
    ramp = np.linspace(0, 255, CANVAS[1], dtype=np.float32)
    wall = np.broadcast_to(ramp[None, :, None], (*CANVAS, 3)).astype(np.uint8)
    (raw / "empty_room.mp4").write_bytes(encode_mp4(np.stack([wall] * 30), audio=speech(30, 1)))
    good = (raw / "astro talk.mp4").read_bytes()
    (raw / "broken.mp4").write_bytes(good[: len(good) // 3])  # moov atom at the end: cut off
    (raw / "silent_film.mp4").write_bytes(encode_mp4(np.stack([animation.frame(t) for t in range(30)])))
    face = [animation.frame(t) for t in range(15)]
    (raw / "short_take.mp4").write_bytes(encode_mp4(np.stack(face), audio=speech(15, 2)))  # 0.6 s < 1 s
    # the face, 15 frames of empty wall (more than the 12 that are filled in), the face again
    walked_off = np.stack(face[:10] + [wall] * 15 + face[:10])
    (raw / "walked_off.mp4").write_bytes(encode_mp4(walked_off, audio=speech(len(walked_off), 3)))
    return raw


@pytest.fixture(scope="session")
def prepared(raw_dir, tmp_path_factory) -> Path:
    """`dawn-train data prep` of `raw_dir` (one run for the session; a name with a dot and a space)."""
    from dawn_train.cli import main

    out = tmp_path_factory.mktemp("prepared") / "out dir.v2"
    assert main(["data", "prep", "--src", str(raw_dir), "--out", str(out), "--size", str(SIZE), "--quiet"]) == 0
    return out
