"""`dawn-train bench prep`: throughput of `data prep` on 720p input, videos/s and frames/s, per core (per CPU-second
of the process, all its threads counted) and per wall-clock second.

The input is made here, so the figure needs no dataset: scikit-image's astronaut animated with known
head motion and blinks (`data/prep/animate.py`) on a 1280 x 720 canvas, H.264 + AAC, `seconds` long.
Each video is prepared in one process (prep's unit of parallelism: `--workers` or array tasks run more
videos side by side); that process uses several threads, so the per-core figures divide by its measured CPU
time, not by its wall-clock time (`bench_prep`).  The split into phases (decode, landmarks, crop + encode),
each in wall and CPU seconds, says where the time goes; decode and face mesh are timed in runs of their own and
the rest is the difference, so on short clips it carries their noise (it can come out slightly negative)."""
from __future__ import annotations

import os
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


def _timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread, e.g. PyAV's, x264's, MediaPipe's, OpenCV's)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_prep(seconds: float = 10.0, videos: int = 2, size: int = 256, work_dir: str | Path | None = None) -> dict:
    """Prepare `videos` 720p clips of `seconds` one after the other in this process; report rates and phases.

    One video process is not one core: the decoder, the x264 encoder, MediaPipe and OpenCV run threads of their
    own.  So the process CPU time (all threads, `time.process_time`) is measured beside the wall-clock time:
    `frames_per_s_per_core` = frames / CPU-seconds (what one core's worth of CPU achieves, the figure to divide a
    dataset's CPU budget by), `frames_per_s` = frames / wall-seconds (what one video process achieves), and
    `cores_used` = CPU-seconds / wall-seconds (how many cores one video process keeps busy on average)."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        source = make_720p_video(tmp / "astronaut720p.mp4", seconds)
        n_frames = sum(1 for _ in frames_25fps(source))
        decode = _timed(lambda: sum(1 for _ in frames_25fps(source)))
        tracked = _timed(lambda: track_face(source))
        wall = cpu = 0.0
        for index in range(videos):
            took = _timed(lambda: prepare_video(source, tmp / "out", f"v{index}", PrepOptions(size=size)))
            wall, cpu = wall + took[0], cpu + took[1]
    frames = n_frames * videos
    phases = {"decode (x2)": [2 * decode[0], 2 * decode[1]],
              "face mesh": [tracked[0] - decode[0], tracked[1] - decode[1]]}
    phases["crop + encode + audio + labels"] = [wall / videos - sum(p[0] for p in phases.values()),
                                                cpu / videos - sum(p[1] for p in phases.values())]
    return {
        "input": "1280x720 H.264 + AAC, 25 fps", "seconds_per_video": seconds, "frames_per_video": n_frames,
        "videos": videos, "crop_size": size, "cpu_count": os.cpu_count(),
        "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "cores_used": round(cpu / wall, 2),
        "videos_per_s": round(videos / wall, 4), "frames_per_s": round(frames / wall, 2),
        "videos_per_s_per_core": round(videos / cpu, 4), "frames_per_s_per_core": round(frames / cpu, 2),
        "realtime_factor": round(seconds * videos / wall, 2),
        "phase_seconds_per_video": {name: {"wall": round(w, 3), "cpu": round(c, 3)} for name, (w, c) in phases.items()},
    }
