"""The synthetic renderer (`dawn_train.data.synth.render_frame`) in torch: batched and differentiable.

`render(scene, size)` draws the same picture as `render_frame` for every scene of a batch (pixel
values agree to 1/255, checked by tests/metrics/test_synthetic.py), fast enough to make a probe's
training data on the fly. `sample_scenes` draws scenes from the priors of `dawn_train.data.synth`
(identity, head pose, blinks, mouth opening), a little wider, so the probe never sees a frame
outside what it was trained on.

Units are those of the dataset: pose (yaw, pitch, roll in degrees, scale = face height / crop size,
tx, ty = face centre in pixels of the frame), eye openness = lid distance / eye width (the `blink`
labels; about 0.3 open, 0.05 closed), mouth opening in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from dawn_train.data import face_layout as layout
from dawn_train.data.synth import Identity

SCLERA = (0.95, 0.95, 0.95)
PUPIL = (0.1, 0.07, 0.05)
MOUTH_INSIDE = (0.2, 0.05, 0.05)
# The visible identity parameters, in this order: face aspect, skin RGB, hair RGB, background RGB
# at the top row and at the bottom row (lip colour follows from the skin; voice and blink rate
# are not visible in a frame).
IDENTITY_NAMES = ("aspect", "skin_r", "skin_g", "skin_b", "hair_r", "hair_g", "hair_b",
                  "bg_top_r", "bg_top_g", "bg_top_b", "bg_bottom_r", "bg_bottom_g", "bg_bottom_b")


@dataclass
class Scene:
    """Render parameters of a batch of N frames (tensors on one device)."""

    pose: Tensor  # (N, 6) yaw, pitch, roll (deg), scale, tx, ty (pixels of a `size` frame)
    eyes: Tensor  # (N, 2) openness, image-left eye first
    mouth: Tensor  # (N,) in [0, 1]
    identity: Tensor  # (N, 13) see IDENTITY_NAMES
    texture_phase: Tensor  # (N, 4) radians (only the first 3 are drawn)

    def __len__(self) -> int:
        return self.pose.shape[0]

    def to(self, *args, **kwargs) -> Scene:
        return Scene(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    @staticmethod
    def cat(scenes: list[Scene]) -> Scene:
        return Scene(**{f.name: torch.cat([getattr(s, f.name) for s in scenes]) for f in fields(Scene)})


def identity_vector(identity: Identity) -> np.ndarray:
    """A dataset `Identity` -> (13,) visible identity parameters (IDENTITY_NAMES order)."""
    return np.concatenate([[identity.aspect], identity.skin, identity.hair, *identity.background]).astype(np.float32)


def scene_from_labels(identity: Identity, pose: np.ndarray, eyes: np.ndarray, mouth: np.ndarray) -> Scene:
    """A video's identity and per-frame labels (T, 6), (T, 2), (T,) -> a Scene of T frames."""
    n = len(pose)
    return Scene(
        pose=torch.as_tensor(np.asarray(pose, dtype=np.float32)),
        eyes=torch.as_tensor(np.asarray(eyes, dtype=np.float32)),
        mouth=torch.as_tensor(np.asarray(mouth, dtype=np.float32)),
        identity=torch.as_tensor(identity_vector(identity)).expand(n, -1).clone(),
        texture_phase=torch.as_tensor(np.asarray(identity.texture_phase, dtype=np.float32)).expand(n, -1).clone(),
    )


def _uniform(gen: torch.Generator, n: int, low, high) -> Tensor:
    low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
    shape = (n,) + tuple(torch.broadcast_shapes(low.shape, high.shape))
    return low + (high - low) * torch.rand(shape, generator=gen)


def sample_scenes(gen: torch.Generator, n: int, size: int, *, blink_fraction: float = 0.3,
                  closed_mouth_fraction: float = 0.2) -> Scene:
    """N independent scenes from the synth priors (`random_identity`, `head_pose`, `blinks`,
    `mouth_from_audio`), widened by a margin; `blink_fraction` of the frames are mid-blink (the
    dataset has about 10 %) and `closed_mouth_fraction` have the mouth shut (speech pauses)."""
    skin = _uniform(gen, n, [0.55, 0.35, 0.25], [0.95, 0.8, 0.7])
    hair = _uniform(gen, n, 0.02, [0.5] * 3) * _uniform(gen, n, 0.3, [1.0])
    background = _uniform(gen, n, 0.1, [0.9] * 6)
    identity = torch.cat([_uniform(gen, n, 0.70, [0.88]), skin, hair, background], 1)
    low, high = layout.EYE_OPEN[0] - 0.01, layout.EYE_OPEN[1] + 0.01
    eye_open = _uniform(gen, n, low, [high]) * torch.cat([torch.ones(n, 1), _uniform(gen, n, 0.92, [1.08])], 1)
    closure = torch.rand(n, 1, generator=gen) * (torch.rand(n, 1, generator=gen) < blink_fraction)
    eyes = eye_open * (1 - layout.BLINK_DEPTH * closure)
    mouth = torch.rand(n, generator=gen) * 1.05 * (torch.rand(n, generator=gen) >= closed_mouth_fraction)
    pose = torch.cat([
        _uniform(gen, n, [-16.0, -12.0, -7.0, 0.57], [16.0, 12.0, 7.0, 0.77]),
        _uniform(gen, n, [0.41, 0.44], [0.59, 0.60]) * size,
    ], 1)
    return Scene(pose=pose, eyes=eyes, mouth=mouth.clamp(max=1.0), identity=identity,
                 texture_phase=_uniform(gen, n, 0.0, [2 * math.pi] * 4))


def _minimum(a, b):
    """min of two floats or tensors (works under torch.func transforms)."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        return min(a, b)
    if not isinstance(a, Tensor):
        a, b = b, a
    return a.clamp(max=b) if not isinstance(b, Tensor) else torch.minimum(a, b)


class _Canvas:
    """Face coordinates of every pixel for a batch (face half-height = 1, y down), as `FaceCanvas`."""

    def __init__(self, scene: Scene, size: int):
        pose = scene.pose
        yaw, pitch, roll = torch.deg2rad(pose[:, :3]).unbind(1)
        self.radius = (pose[:, 3] * size / 2)[:, None, None]  # (N, 1, 1) face half-height in pixels
        cos, sin = roll.cos()[:, None, None], roll.sin()[:, None, None]
        self.aspect = (scene.identity[:, 0] * (1 - layout.YAW_NARROWING * yaw.sin().abs()))[:, None, None]
        self.dx = (layout.YAW_SHIFT * yaw.sin())[:, None, None]
        self.dy = (layout.PITCH_SHIFT * pitch.sin())[:, None, None]
        grid = torch.arange(size, device=pose.device, dtype=pose.dtype) + 0.5
        u = grid[None, None, :] - pose[:, 4, None, None]  # (N, 1, W)
        v = grid[None, :, None] - pose[:, 5, None, None]  # (N, H, 1)
        self.fu = (cos * u + sin * v) / self.radius  # (N, H, W)
        self.fv = (-sin * u + cos * v) / self.radius

    def ellipse(self, cx, cy, rx, ry) -> Tensor:
        """Coverage (N, H, W) in [0, 1], soft over about one pixel; centre and radii are floats or (N, 1, 1)."""
        x, y = (self.fu - cx) / rx, (self.fv - cy) / ry
        q = (x ** 2 + y ** 2).clamp(min=1e-12).sqrt()  # finite gradient at the centre
        grad2 = (x / rx) ** 2 + (y / ry) ** 2  # (q |grad q|)^2: the distance to the outline as `FaceCanvas.ellipse`
        first_order = torch.where(grad2 > 1e-24, (q - 1) * q / grad2.clamp(min=1e-24).sqrt(), -_minimum(rx, ry))
        box = torch.maximum((x * rx).abs() - rx, (y * ry).abs() - ry)
        return (0.5 - torch.maximum(first_order, box) * self.radius).clamp(0, 1)


def render(scene: Scene, size: int) -> Tensor:
    """Scenes -> frames (N, 3, H, W) float in [0, 1] (H = W = size), as `render_frame` before its
    rounding to uint8. Differentiable in every parameter except through the hair line's hard edge."""
    canvas, ident = _Canvas(scene, size), scene.identity

    def const(rgb) -> Tensor:  # a fixed colour -> (1, 3, 1, 1)
        return torch.tensor(rgb, dtype=ident.dtype, device=ident.device)[None, :, None, None]

    colours = ident[:, 1:, None, None]  # (N, 12, 1, 1)
    skin, hair, top, bottom = colours[:, 0:3], colours[:, 3:6], colours[:, 6:9], colours[:, 9:12]
    ramp = torch.linspace(0, 1, size, dtype=ident.dtype, device=ident.device)[None, None, :, None]
    image = ((1 - ramp) * top + ramp * bottom).expand(-1, -1, -1, size)

    def paint(alpha: Tensor, colour: Tensor) -> None:
        nonlocal image
        image = image * (1 - alpha[:, None]) + alpha[:, None] * colour

    a, dx, dy, p = canvas.aspect, canvas.dx, canvas.dy, scene.texture_phase[:, :, None, None]
    hair_cover = canvas.ellipse(0.0, layout.HAIR_Y, a * layout.HAIR_WIDTH, layout.HAIR_HALF_HEIGHT)
    paint(hair_cover, hair)
    shading = 1 + 0.08 * torch.sin(3 * canvas.fu + p[:, 0]) * torch.sin(4 * canvas.fv + p[:, 1]) - 0.12 * canvas.fu ** 2
    paint(canvas.ellipse(0.0, 0.0, a, 1.0), (skin * shading[:, None]).clamp(0, 1))
    fringe = (canvas.fv < -0.62 + 0.08 * torch.sin(5 * canvas.fu + p[:, 2])).to(image.dtype)
    paint(hair_cover * fringe, hair)
    for side, eye_open in zip((-1, 1), scene.eyes.unbind(1)):  # image-left eye first
        cx, cy = side * layout.EYE_X + dx, layout.EYE_Y + dy
        brow = canvas.ellipse(cx, cy - layout.BROW_ABOVE, layout.BROW_HALF_WIDTH, layout.BROW_HALF_HEIGHT)
        paint(brow, hair * 0.6)
        half_height = (eye_open * layout.EYE_HALF_WIDTH).clamp(min=1e-3)[:, None, None]
        sclera = canvas.ellipse(cx, cy, layout.EYE_HALF_WIDTH, half_height)
        paint(sclera, const(SCLERA))
        pupil = canvas.ellipse(cx + layout.PUPIL_FOLLOW * dx, cy, layout.PUPIL_RADIUS, layout.PUPIL_RADIUS)
        paint(sclera * pupil, const(PUPIL))
    nose = canvas.ellipse(layout.NOSE_FOLLOW * dx, layout.NOSE_Y + dy, layout.NOSE_HALF_WIDTH, layout.NOSE_HALF_HEIGHT)
    paint(nose, skin * 0.8)
    mouth = scene.mouth[:, None, None]
    lips = (skin * const((1.0, 0.55, 0.55)) + const((0.05, 0.0, 0.0))).clamp(0, 1)
    my = layout.MOUTH_Y + dy
    paint(canvas.ellipse(dx, my, layout.LIPS_HALF_WIDTH, layout.LIPS_CLOSED + layout.LIPS_GAIN * mouth), lips)
    inside = canvas.ellipse(dx, my, layout.INSIDE_HALF_WIDTH, layout.INSIDE_CLOSED + layout.INSIDE_GAIN * mouth)
    paint(inside, const(MOUTH_INSIDE))
    return image.clamp(0, 1)


def quantize(frames: Tensor) -> Tensor:
    """Float frames in [0, 1] -> the same rounded to 8-bit levels (what `render_frame` returns / 255)."""
    return (frames.clamp(0, 1) * 255).round() / 255


def mouth_from_landmarks(mouth_lmk: np.ndarray) -> np.ndarray:
    """The true mouth opening (...,) from synthetic mouth landmarks (..., 20, 2) (`render_frame`'s
    `mouth_lmk`, the shards' `mouth_lmk.npy`): outer-lip height over width, which the renderer sets
    to (LIPS_CLOSED + LIPS_GAIN x mouth) / LIPS_HALF_WIDTH (`face_layout`) whatever the pose."""
    lmk = np.asarray(mouth_lmk, dtype=np.float64)
    height = np.linalg.norm(lmk[..., 3, :] - lmk[..., 9, :], axis=-1)  # outer points at 90 and 270 degrees
    width = np.linalg.norm(lmk[..., 0, :] - lmk[..., 6, :], axis=-1)  # at 0 and 180 degrees
    half_height = layout.LIPS_HALF_WIDTH * height / np.maximum(width, 1e-9)
    return ((half_height - layout.LIPS_CLOSED) / layout.LIPS_GAIN).astype(np.float32)
