"""Video encoding (PyAV / libx264) and decoding from bytes (decord).

Shards store H.264 with a short, fixed keyframe interval and no B-frames: a random clip is
then decoded from the nearest keyframe at most `gop - 1` frames early, which keeps random
clip access cheap (measured with `dawn-train bench loader`, see README)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from dawn_train.data.schema import FPS, SAMPLE_RATE


class VideoError(ValueError):
    """Undecodable or unusable video; the message names the file or sample."""


@dataclass(frozen=True)
class Encoding:
    """H.264 settings for shard videos. `gop`: keyframe interval in frames; `crf`: quality
    (lower is better, 18 is visually lossless for these crops)."""

    gop: int = 10
    crf: int = 18
    preset: str = "veryfast"


def encode_mp4(frames: np.ndarray, fps: int = FPS, encoding: Encoding = Encoding(), audio: np.ndarray | None = None,
               sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode uint8 RGB frames (T, H, W, 3) as an H.264 mp4 in memory; returns the file bytes.

    With `audio` (mono float (L,) in [-1, 1] at `sample_rate`, cut to T / fps seconds) the file
    also gets an AAC audio track: what generated videos and sample videos carry."""
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideoError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    n_frames, height, width, _ = frames.shape
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Fixed GOP, no scene-cut keyframes, no B-frames: predictable seek cost per clip.
        stream.options = {
            "crf": str(encoding.crf), "preset": encoding.preset, "g": str(encoding.gop),
            "keyint_min": str(encoding.gop), "sc_threshold": "0", "bf": "0",
        }
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            samples = np.ascontiguousarray(np.clip(audio[: n_frames * sample_rate // fps], -1, 1), dtype=np.float32)
            for start in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, start
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return buffer.getvalue()


class VideoBytes:
    """A decord reader over mp4 bytes. `name` is used in error messages."""

    def __init__(self, data: bytes, name: str = "<video>"):
        import decord

        self.name = name
        try:
            self._reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
        except Exception as exc:  # decord raises its own DECORDError from C++
            raise VideoError(f"{name}: cannot decode mp4 ({exc})") from exc

    def __len__(self) -> int:
        return len(self._reader)

    @property
    def fps(self) -> float:
        return float(self._reader.get_avg_fps())

    def frames(self, indices) -> np.ndarray:
        """Decode the given frame indices -> uint8 (N, H, W, 3)."""
        indices = [int(i) for i in indices]
        if indices and (min(indices) < 0 or max(indices) >= len(self)):
            raise VideoError(f"{self.name}: frame index out of range 0..{len(self) - 1}")
        try:
            return self._reader.get_batch(indices).asnumpy()
        except Exception as exc:
            raise VideoError(f"{self.name}: decoding frames failed ({exc})") from exc


def decode_all(data: bytes, name: str = "<video>") -> np.ndarray:
    """All frames of mp4 bytes -> uint8 (T, H, W, 3)."""
    video = VideoBytes(data, name)
    return video.frames(range(len(video)))
