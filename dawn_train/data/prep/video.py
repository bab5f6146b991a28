"""One raw video -> one prepared video (`data/prepared.py` layout), or a PrepFailure saying why not.

    probe        corrupt file, no video or no audio stream -> failure
    pass 1       frames at 25 fps -> face mesh (tracking mode) per frame; too short, no face, face lost
                 for more than `max_gap` frames -> failure; short gaps interpolated (`prep/track.py`)
    crop         one square per video from the 68-point boxes (`track.crop_box`)
    labels       pose, blink, face box, mouth/eye/68 landmarks in the crop (`prep/annotate.py`)
    pass 2       frames at 25 fps again -> crop, resize to `size` -> H.264 (streamed: no video held whole)
    audio        16 kHz mono, aligned to the first frame, 640 samples per frame (`prep/decode.py`)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dawn_train.data.prep.annotate import crop_labels
from dawn_train.data.prep.decode import audio_for_frames, frames_25fps, probe
from dawn_train.data.prep.failures import PrepFailure
from dawn_train.data.prep.landmarks import FaceMesh
from dawn_train.data.prep.mesh68 import box_of, to_68
from dawn_train.data.prep.pose import POSE_UNITS
from dawn_train.data.prep.track import CropBox, crop_box, crop_frame, fill_gaps
from dawn_train.data.prepared import write_prepared
from dawn_train.data.schema import FPS, SAMPLE_RATE, SCHEMA_VERSION
from dawn_train.data.video import Encoding, encode_mp4

PREP_VERSION = 1


@dataclass(frozen=True)
class PrepOptions:
    """How raw videos are prepared.  `size`: crop side in pixels (128 or 256 for the official models);
    `crop_scale`: crop side / face size (`track.crop_box`); `max_gap`: frames without a face that are
    filled in (12 = 0.48 s; a longer loss fails the video); `min_seconds`: shorter videos fail."""

    size: int = 256
    crop_scale: float = 1.8
    max_gap: int = 12
    min_seconds: float = 1.0
    encoding: Encoding = field(default_factory=Encoding)

    def describe(self) -> dict:
        return {**asdict(self), "prep_version": PREP_VERSION}


class CroppedFrames:
    """The crops of a video's frames as `encode_mp4` reads them (shape, dtype, iteration), produced while
    the encoder pulls them; counts what it yielded."""

    ndim, dtype = 4, np.dtype(np.uint8)

    def __init__(self, source: Path, box: CropBox, size: int, n_frames: int):
        self.source, self.box, self.shape, self.count = source, box, (n_frames, size, size, 3), 0

    def __iter__(self):
        for frame in frames_25fps(self.source):
            if self.count == self.shape[0]:
                return
            self.count += 1
            yield crop_frame(frame, self.box, self.shape[1])


def track_face(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: (T, 478, 3) mesh points in source pixels (zeros where no face) and (T,) found flags."""
    points, found = [], []
    with FaceMesh(video=True) as mesh:
        for frame in frames_25fps(source):
            face = mesh.landmarks(frame)
            found.append(face is not None)
            points.append(face if face is not None else np.zeros((478, 3), np.float32))
    if not points:
        raise PrepFailure("no video frames decoded")
    return np.stack(points), np.asarray(found)


def prepare_video(source: str | Path, out: str | Path, video_id: str, options: PrepOptions = PrepOptions()) -> dict:
    """Prepare `source` into `out/<video_id>.{mp4,wav,npz,json}`; returns the json metadata.
    Raises PrepFailure (the reason) when the video cannot be used."""
    source, out = Path(source), Path(out)
    info = probe(source)
    mesh, found = track_face(source)
    n_frames = len(found)
    if n_frames < options.min_seconds * FPS:
        raise PrepFailure(f"too short: {n_frames} frames ({n_frames / FPS:.2f} s at 25 fps), need {options.min_seconds:g} s")
    mesh = fill_gaps(mesh, found, options.max_gap)
    box = crop_box(box_of(to_68(mesh)[..., :2]), options.crop_scale)
    labels = {**crop_labels(mesh, box, options.size), "face_found": found}
    audio = audio_for_frames(source, info.start, n_frames)
    frames = CroppedFrames(source, box, options.size, n_frames)
    mp4 = encode_mp4(frames, FPS, options.encoding)
    if frames.count != n_frames:  # the second decode must see the frames the first one saw
        raise PrepFailure(f"second decoding gave {frames.count} frames, the first {n_frames}")
    meta = {
        "video_id": video_id, "source": str(source), "fps": FPS, "n_frames": n_frames, "size": options.size,
        "sample_rate": SAMPLE_RATE, "source_fps": round(info.fps, 3), "source_size": [info.width, info.height],
        "crop_box": box.as_list(), "face_frames_filled": int((~found).sum()), "pose_units": POSE_UNITS,
        "prep": options.describe(), "schema_version": SCHEMA_VERSION,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_prepared(out, video_id, mp4, audio, labels, meta)
    return meta
