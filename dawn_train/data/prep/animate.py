"""A raw talking-head video with known head motion and blinks, made from one photo: the ground truth that
prep's tests and `dawn-train bench prep` run on (no dataset download).

Every frame is the photo with its eyes open or closed (lids painted in the colour of the skin below the
eye, with a darker lash line), turned, scaled and moved about the face centre by a known similarity
transform, on a canvas of the requested size.  In-plane motion is what a photo can show honestly: roll,
scale and translation are known exactly; yaw and pitch are not animated.  The audio is the synthetic
speech of `data/synth.py`, muxed as AAC.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dawn_train.data.prep.landmarks import FaceMesh
from dawn_train.data.prep.mesh68 import to_68
from dawn_train.data.prep.pose import face_centre
from dawn_train.data.schema import FPS


@dataclass(frozen=True)
class Motion:
    """Per frame: roll (T,) degrees, counter-clockwise as seen (the 3DDFA sign); scale (T,) relative to the
    photo; shift (T, 2) pixels of the canvas (x right, y down); closed (T,) eyes closed."""

    roll: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    closed: np.ndarray


def known_motion(n_frames: int, roll: float = 12.0, scale: float = 0.12, shift: float = 0.04, canvas: int = 256,
                 blinks: tuple[int, ...] = (20, 60, 100)) -> Motion:
    """Smooth head motion of the given amplitudes (roll in degrees, scale as a fraction, shift as a
    fraction of `canvas`) and 4-frame eye closures starting at the frames `blinks`."""
    t = np.arange(n_frames) / FPS
    closed = np.zeros(n_frames, dtype=bool)
    for start in blinks:
        closed[start:start + 4] = True
    return Motion(roll=roll * np.sin(2 * np.pi * 0.4 * t), scale=1 + scale * np.sin(2 * np.pi * 0.3 * t + 1.0),
                  shift=canvas * shift * np.stack([np.sin(2 * np.pi * 0.25 * t), np.sin(2 * np.pi * 0.35 * t + 2.0)], 1),
                  closed=closed)


def close_eyes(photo: np.ndarray, mesh: np.ndarray) -> np.ndarray:
    """The photo with both eyes painted shut: an ellipse over each eye (68 points 36-41 and 42-47) in the
    colour of the skin below it, and a darker line where the lids meet."""
    import cv2

    closed = photo.copy()
    lmk = to_68(mesh)[:, :2]
    for eye in (lmk[36:42], lmk[42:48]):
        a, b = eye[0], eye[3]
        centre, width = (a + b) / 2, np.linalg.norm(b - a)
        angle = np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0]))
        below = np.clip(np.round(centre + [0, 0.6 * width]).astype(int), 0, [photo.shape[1] - 1, photo.shape[0] - 1])
        skin = tuple(int(c) for c in photo[below[1], below[0]])
        axes = (int(round(0.6 * width)), int(round(0.35 * width)))
        cv2.ellipse(closed, tuple(np.round(centre).astype(int)), axes, angle, 0, 360, skin, -1, cv2.LINE_AA)
        lash = tuple(int(0.5 * c) for c in skin)
        cv2.line(closed, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), lash, 1, cv2.LINE_AA)
    return closed


class PhotoAnimation:
    """The frames of `motion` applied to `photo` on a (height, width) canvas; `transform(t)` is frame t's
    2 x 3 affine map from photo pixels to canvas pixels (what the tests compare prep's output with)."""

    def __init__(self, photo: np.ndarray, motion: Motion, canvas: tuple[int, int]):
        with FaceMesh(video=False) as mesh:
            points = mesh.landmarks(photo)
        if points is None:
            raise ValueError("the photo to animate has no face MediaPipe finds")
        self.photo, self.closed_photo, self.mesh = photo, close_eyes(photo, points), points
        self.motion, self.canvas = motion, canvas
        self.centre = face_centre(points)

    def __len__(self) -> int:
        return len(self.motion.roll)

    def transform(self, t: int) -> np.ndarray:
        angle, s = np.radians(self.motion.roll[t]), self.motion.scale[t]
        # counter-clockwise on screen in y-down pixels: x' = c dx + s dy, y' = -s dx + c dy
        linear = s * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        target = np.array([self.canvas[1] / 2, self.canvas[0] / 2]) + self.motion.shift[t]
        return np.concatenate([linear, (target - linear @ self.centre)[:, None]], axis=1)

    def frame(self, t: int) -> np.ndarray:
        import cv2

        source = self.closed_photo if self.motion.closed[t] else self.photo
        height, width = self.canvas
        return cv2.warpAffine(source, self.transform(t), (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 48))

    @property
    def ndim(self) -> int:  # what `encode_mp4` reads of a frame array
        return 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self.canvas, 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __iter__(self):
        return (self.frame(t) for t in range(len(self)))
