"""A video's face track -> gaps filled, smoothed, and one square crop for the whole video.

Gaps: frames without landmarks are filled by linear interpolation between the neighbouring found frames
(held at the ends) as long as no run of missing frames is longer than `max_gap`; a longer run fails the
video ("face lost").  Landmarks themselves are not smoothed (blinks and lip motion last a few frames); the
pose and the boxes that place the crop are (Savitzky-Golay, 5 frames, order 2: keeps turns and nods,
removes frame-to-frame landmark noise).

The crop: one square per video, fixed over time, so the crop itself has no jitter and the head moves in
it as it moved in the source.  Its side is `crop_scale` x the face size (the larger side of the 68-point
box, brow to chin, 90th percentile over the video), widened when needed so that the 2nd-98th percentile
extent of the boxes over the video fits with the same margin; its centre is the middle of that extent,
raised by `raise_centre` x face size to show the forehead and hair.  Parts outside the frame are black.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dawn_train.data.prep.failures import PrepFailure
from dawn_train.data.schema import FPS

SMOOTH_WINDOW = 5


@dataclass(frozen=True)
class CropBox:
    """A square in source pixels: top-left corner (x0, y0) and side, integers (exact pixel mapping)."""

    x0: int
    y0: int
    side: int

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Source-pixel points (..., 2+) -> pixels of the crop resized to `size` (x, y only)."""
        return ((np.asarray(points)[..., :2] - [self.x0, self.y0]) * (size / self.side)).astype(np.float32)

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.side]


def fill_gaps(points: np.ndarray, found: np.ndarray, max_gap: int) -> np.ndarray:
    """points (T, K, C) with rows valid where `found` (T,) -> (T, K, C) float32, missing rows interpolated.

    Raises PrepFailure when no frame has a face or a run of more than `max_gap` frames has none."""
    found = np.asarray(found, dtype=bool)
    if not found.any():
        raise PrepFailure("no face found")
    missing = np.flatnonzero(~found)
    if missing.size:
        runs = np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1)
        longest = max(runs, key=len)
        if len(longest) > max_gap:
            raise PrepFailure(f"face lost for {len(longest)} frames ({longest[0] / FPS:.2f}-{(longest[-1] + 1) / FPS:.2f} s; "
                              f"at most {max_gap} are filled in)")
    valid = np.flatnonzero(found)
    filled = np.asarray(points, dtype=np.float32).copy()
    index = np.searchsorted(valid, missing)  # the first found frame after each missing one (len: none)
    # before the first / after the last found frame both ends are that frame: it is held
    lo = valid[np.clip(index - 1, 0, len(valid) - 1)]
    hi = valid[np.clip(index, 0, len(valid) - 1)]
    weight = np.where(hi > lo, (missing - lo) / np.maximum(hi - lo, 1), 0.0)[:, None, None]
    filled[missing] = (1 - weight) * filled[lo] + weight * filled[hi]
    return filled


def smooth(series: np.ndarray) -> np.ndarray:
    """Savitzky-Golay smoothing along axis 0 (unchanged when shorter than the window)."""
    from scipy.signal import savgol_filter

    if len(series) < SMOOTH_WINDOW:
        return np.asarray(series)
    return savgol_filter(series, SMOOTH_WINDOW, 2, axis=0, mode="interp").astype(np.asarray(series).dtype)


def crop_box(boxes: np.ndarray, crop_scale: float = 1.8, raise_centre: float = 0.1) -> CropBox:
    """One square crop for face boxes (T, 4) (x0, y0, x1, y1, source pixels) over a video (module docstring)."""
    boxes = smooth(np.asarray(boxes, dtype=np.float64))
    face = np.percentile(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 90)
    lo = np.percentile(boxes[:, :2], 2, axis=0)
    hi = np.percentile(boxes[:, 2:], 98, axis=0)
    side = max(crop_scale * face, *(hi - lo + (crop_scale - 1) * face))
    centre = (lo + hi) / 2 - [0.0, raise_centre * face]
    side = int(np.ceil(side))
    return CropBox(int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2)), side)


def crop_frame(frame: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> the square `box` resized to (size, size, 3) (area filter: no aliasing when
    shrinking), black outside the frame."""
    import cv2

    h, w = frame.shape[:2]
    region = np.zeros((box.side, box.side, 3), dtype=np.uint8)
    x0, y0 = max(box.x0, 0), max(box.y0, 0)
    x1, y1 = min(box.x0 + box.side, w), min(box.y0 + box.side, h)
    if x1 > x0 and y1 > y0:
        region[y0 - box.y0:y1 - box.y0, x0 - box.x0:x1 - box.x0] = frame[y0:y1, x0:x1]
    shrink = box.side >= size
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
