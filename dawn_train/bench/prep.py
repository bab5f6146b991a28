"""`dawn-train bench prep`: throughput of `data prep` on 720p input, videos/s and frames/s per core.

The input is made here, so the figure needs no dataset: scikit-image's astronaut animated with known
head motion and blinks (`data/prep/animate.py`) on a 1280 x 720 canvas, H.264 + AAC, `seconds` long.
Each video is prepared in one process (prep's unit of parallelism: `--workers` or array tasks run more
videos side by side), so the per-core figure is what one video process achieves; the split into phases
(decode, landmarks, crop + encode) says where the time goes."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from dawn_train.data.prep.animate import PhotoAnimation, known_motion
from dawn_train.data.prep.decode import frames_25fps
from dawn_train.data.prep.video import PrepOptions, prepare_video, track_face
from dawn_train.data.schema import FPS
from dawn_train.data.synth import speech_audio
from dawn_train.data.video import encode_mp4


def make_720p_video(path: Path, seconds: float, seed: int = 0) -> Path:
    """An astronaut talking-head clip at 1280 x 720 (face about 250 px wide), 25 fps, with speech-like audio."""
    from skimage.data import astronaut

    n_frames = int(round(seconds * FPS))
    import cv2

    # head and shoulders scaled so the face is about 250 px wide, as in HDTF's 720p videos
    photo = cv2.resize(np.ascontiguousarray(astronaut()[0:300, 80:360]), None, fx=2.4, fy=2.4,
                       interpolation=cv2.INTER_CUBIC)
    animation = PhotoAnimation(photo, known_motion(n_frames, canvas=720), (720, 1280))
    path.write_bytes(encode_mp4(animation, audio=speech_audio(np.random.default_rng(seed), n_frames / FPS, 160.0)))
    return path


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_prep(seconds: float = 10.0, videos: int = 2, size: int = 256, work_dir: str | Path | None = None) -> dict:
    """Prepare `videos` 720p clips of `seconds` one after the other on one core; report rates and phases."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        source = make_720p_video(tmp / "astronaut720p.mp4", seconds)
        n_frames = sum(1 for _ in frames_25fps(source))
        decode = _timed(lambda: sum(1 for _ in frames_25fps(source)))
        landmarks = _timed(lambda: track_face(source)) - decode
        total = 0.0
        for index in range(videos):
            total += _timed(lambda: prepare_video(source, tmp / "out", f"v{index}", PrepOptions(size=size)))
    per_video = total / videos
    return {
        "input": "1280x720 H.264 + AAC, 25 fps", "seconds_per_video": seconds, "frames_per_video": n_frames,
        "videos": videos, "crop_size": size, "cores": 1, "wall_seconds": round(total, 2),
        "videos_per_s_per_core": round(1 / per_video, 4), "frames_per_s_per_core": round(n_frames / per_video, 1),
        "realtime_factor": round(seconds / per_video, 2),
        "phase_seconds_per_video": {"decode (x2)": round(2 * decode, 2), "face mesh": round(landmarks, 2),
                                    "crop + encode + audio + labels": round(per_video - 2 * decode - landmarks, 2)},
    }
