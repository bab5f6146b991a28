"""Raw video files -> frames at 25 fps and 16 kHz mono audio (PyAV, no system ffmpeg).

Frame rate: output frame k shows the source frame nearest to time k / 25 s (counted from the first
video frame), as FFmpeg's `fps` filter does: a 30 fps source drops one frame in six, a 24 fps one repeats
one in 24; a 25 fps source passes unchanged.  The frames are streamed (a 720p hour does not fit in memory),
so prep decodes a video twice: once for the landmarks, once for the crops.

Audio: `data.audio.decode_audio`, the path `generate` uses too (swresample, anti-aliased), aligned to the
first video frame (audio before it is dropped, a late audio start is padded with silence) and cut or
padded to exactly 640 samples per output frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dawn_train.data.audio import AudioError, decode_audio
from dawn_train.data.prep.failures import PrepFailure
from dawn_train.data.schema import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream: size, frame rate, start time (s), duration (s)."""

    width: int
    height: int
    fps: float
    start: float
    duration: float


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except MemoryError:  # the machine's problem, not the file's: it stops the run (prep/run.py)
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends for corrupt or truncated files
        raise PrepFailure(f"corrupt or unreadable file ({type(exc).__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise PrepFailure("no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """The video stream's VideoInfo (raises PrepFailure for a corrupt file or one without video or audio)."""
    with _open(Path(path)) as container:
        if not container.streams.audio:
            raise PrepFailure("no audio stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or FPS)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            duration = float("nan")
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, start, duration)


def frames_25fps(path: str | Path) -> Iterator[np.ndarray]:
    """The video's frames resampled to 25 fps, uint8 (H, W, 3) RGB, one at a time (see module docstring).
    A file that breaks in the middle raises PrepFailure."""
    container = _open(Path(path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_period = 1.0 / float(stream.average_rate or FPS)
        start, previous, previous_time, k = None, None, 0.0, 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            start = frame.time if start is None else start
            time = frame.time - start
            # every target time closer to the previous source frame than to this one shows the previous frame
            while previous is not None and k / FPS < (previous_time + time) / 2:
                yield previous
                k += 1
            previous, previous_time = frame.to_ndarray(format="rgb24"), time
        if previous is not None:  # the last frame covers half a source period after its time
            while k / FPS < previous_time + source_period / 2 - 1e-6:
                yield previous
                k += 1
    except (PrepFailure, MemoryError):
        raise
    except Exception as exc:  # a stream that breaks mid-way (truncated, corrupt packets)
        raise PrepFailure(f"video decoding failed ({type(exc).__name__}: {exc})") from exc
    finally:
        container.close()


def audio_for_frames(path: str | Path, video_start: float, n_frames: int) -> np.ndarray:
    """The file's audio as 16 kHz mono float32 (n_frames * 640,), aligned to the first video frame."""
    try:
        audio, audio_start = decode_audio(path)
    except AudioError as exc:
        raise PrepFailure(str(exc).split(": ", 1)[-1]) from exc
    shift = int(round((video_start - audio_start) * SAMPLE_RATE))  # > 0: audio starts before the video
    audio = audio[shift:] if shift >= 0 else np.concatenate([np.zeros(-shift, np.float32), audio])
    need = n_frames * SAMPLES_PER_FRAME
    return np.pad(audio[:need], (0, max(0, need - len(audio)))).astype(np.float32)
