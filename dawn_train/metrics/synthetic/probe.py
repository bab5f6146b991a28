"""A probe that reads the synthetic renderer's parameters back from a frame.

Four small CNNs in a cascade, trained on frames rendered with known parameters (`train_probe`):

1. `coarse`: the whole frame at half the probe size -> head pose and identity colours;
2. `face`: a face-aligned crop, resampled from the frame at the current pose estimate (roll,
   scale and position undone) -> the pose error of that estimate, yaw, pitch and face aspect;
   applied `passes` times, each pass starting from the last estimate;
3. `eye`: one aligned crop per eye (the right one mirrored, so one network reads both) -> eye
   openness; `mouth`: an aligned crop of the mouth -> mouth opening.

Aligned crops make the fine stages translation- and scale-free, which is what lets a few minutes
of CPU training reach sub-degree angles (a single global CNN trained as long stays near 1.5 deg).

Inputs of any size are area-resized to `ProbeConfig.size` (64); pose tx, ty come back in pixels
of the input. Readings are in the dataset's units (see `render.py`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dawn_train.data import face_layout as layout
from dawn_train.metrics.synthetic.render import IDENTITY_NAMES, Scene

FACE_WINDOW = (-1.2, 1.2, -1.3, 1.1)  # face-crop extent in face units (u0, u1, v0, v1), v down
# Crop half width / half height in face units around the eye and the mouth centres: the widest eye and lips, a margin.
EYE_WINDOW = (1.5 * layout.EYE_HALF_WIDTH, 0.75 * layout.EYE_HALF_WIDTH)
MOUTH_WINDOW = (layout.LIPS_HALF_WIDTH + 0.07, layout.LIPS_CLOSED + layout.LIPS_GAIN + 0.06)
# Target scaling: each network output is (value - centre) / spread, of order 1.
POSE_CENTRE = (0.0, 0.0, 0.0, 0.67, 0.5, 0.52)  # tx, ty as fractions of the frame size
POSE_SPREAD = (16.0, 12.0, 7.0, 0.1, 0.09, 0.08)
EYES_CENTRE, EYES_SPREAD = 0.2, 0.15
MOUTH_CENTRE, MOUTH_SPREAD = 0.5, 0.5
IDENTITY_CENTRE, IDENTITY_SPREAD = 0.5, 0.3  # colours in [0, 1]; the aspect (0.72-0.86) is refined later
ASPECT_CENTRE, ASPECT_SPREAD = 0.79, 0.05
# Residual targets of the face stage: roll (deg), log scale, centre offset (face units).
RESIDUAL_SPREAD = (2.0, 0.03, 0.05, 0.05)


@dataclass(frozen=True)
class ProbeConfig:
    """Architecture of the probe; saved in the probe file and used to rebuild it."""

    size: int = 64  # probe resolution: frames are area-resized to size x size
    coarse_channels: tuple[int, ...] = (16, 32, 48, 64)  # on size / 2
    coarse_strides: tuple[int, ...] = (1, 2, 2, 2)
    face_crop: int = 48
    face_channels: tuple[int, ...] = (16, 32, 32, 64, 64, 96)
    face_strides: tuple[int, ...] = (1, 2, 1, 2, 1, 2)
    eye_crop: tuple[int, int] = (12, 24)  # (height, width)
    eye_channels: tuple[int, ...] = (16, 32, 32, 64)
    eye_strides: tuple[int, ...] = (1, 1, 2, 2)
    hidden: int = 256
    eye_hidden: int = 64
    mouth_crop: tuple[int, int] = (20, 26)
    mouth_channels: tuple[int, ...] = (16, 32, 32, 64)
    mouth_strides: tuple[int, ...] = (1, 2, 1, 2)
    mouth_hidden: int = 64
    passes: int = 2  # face-stage refinements at inference

    @staticmethod
    def from_dict(values: dict) -> ProbeConfig:
        known = {f.name for f in fields(ProbeConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown probe config keys {unknown}; known: {sorted(known)}")
        return ProbeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass
class ProbeReading:
    """What the probe reads from N frames, in the dataset's units."""

    mouth: Tensor  # (N,) opening in [0, 1] (clamped)
    eyes: Tensor  # (N, 2) openness >= 0, image-left eye first
    pose: Tensor  # (N, 6) yaw, pitch, roll (deg), scale, tx, ty (pixels of the input frame)
    identity: Tensor  # (N, 13) see IDENTITY_NAMES

    @staticmethod
    def cat(readings: list[ProbeReading]) -> ProbeReading:
        return ProbeReading(**{f.name: torch.cat([getattr(r, f.name) for r in readings]) for f in fields(ProbeReading)})

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ConvRegressor(nn.Module):
    """3x3 conv-BN-ReLU layers on the image plus two coordinate channels, then a 2-layer MLP.
    forward: (N, 3, H, W) in [0, 1] -> (N, out)."""

    def __init__(self, hw: tuple[int, int], channels: tuple[int, ...], strides: tuple[int, ...], hidden: int, out: int):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {channels} and strides {strides} differ in length")
        layers, c_in, (h, w) = [], 5, hw
        for c_out, stride in zip(channels, strides):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in, h, w = c_out, (h - 1) // stride + 1, (w - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, out))
        self.hw = hw

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.hw:
            raise ValueError(f"expected (N, 3, {self.hw[0]}, {self.hw[1]}) input, got {tuple(x.shape)}")
        ys = torch.linspace(-1, 1, x.shape[-2], device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, x.shape[-1], device=x.device, dtype=x.dtype)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(x.shape[0], -1, -1, -1)
        return self.head(self.features(torch.cat([x * 2 - 1, coords], 1)))


def aligned_crop(frames: Tensor, pose: Tensor, centre: Tensor, half: tuple[float, float], hw: tuple[int, int],
                 mirror: bool = False) -> Tensor:
    """Resample a window of face coordinates out of frames (N, 3, S, S) (bilinear).

    pose (N, 6) in pixels of the frames; centre (N, 2) window centre in face units; half: half
    width and height in face units; mirror flips the window left-right. Returns (N, 3, h, w)."""
    size = frames.shape[-1]
    roll, radius = torch.deg2rad(pose[:, 2]), pose[:, 3] * size / 2
    cos, sin = roll.cos(), roll.sin()
    hu, hv = (-half[0] if mirror else half[0]), half[1]
    cu, cv = centre.unbind(1)
    # pixel x = tx + radius (cos u - sin v), y = ty + radius (sin u + cos v); normalised = 2 pixel / size - 1
    k = 2 / size
    x0, y0 = pose[:, 4] + radius * (cos * cu - sin * cv), pose[:, 5] + radius * (sin * cu + cos * cv)  # window centre
    theta = torch.stack([
        torch.stack([k * radius * cos * hu, -k * radius * sin * hv, k * x0 - 1], 1),
        torch.stack([k * radius * sin * hu, k * radius * cos * hv, k * y0 - 1], 1),
    ], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, [frames.shape[0], 3, *hw], align_corners=False)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def face_crop(frames: Tensor, pose: Tensor, crop: int) -> Tensor:
    u0, u1, v0, v1 = FACE_WINDOW
    centre = pose.new_tensor([(u0 + u1) / 2, (v0 + v1) / 2]).expand(len(pose), 2)
    return aligned_crop(frames, pose, centre, ((u1 - u0) / 2, (v1 - v0) / 2), (crop, crop))


def feature_shift(pose: Tensor) -> Tensor:
    """(N, 6) -> (N, 2): how far eyes, nose and mouth move with yaw and pitch (face units)."""
    yaw, pitch = torch.deg2rad(pose[:, 0]), torch.deg2rad(pose[:, 1])
    return torch.stack([layout.YAW_SHIFT * yaw.sin(), layout.PITCH_SHIFT * pitch.sin()], 1)


def eye_crops(frames: Tensor, pose: Tensor, hw: tuple[int, int]) -> Tensor:
    """(N, 3, S, S) -> (2N, 3, h, w): the image-left eyes, then the image-right eyes mirrored."""
    shift = feature_shift(pose)
    crops = [aligned_crop(frames, pose, shift + shift.new_tensor([side * layout.EYE_X, layout.EYE_Y]), EYE_WINDOW, hw,
                          mirror=side > 0) for side in (-1, 1)]
    return torch.cat(crops)


def mouth_crop(frames: Tensor, pose: Tensor, hw: tuple[int, int]) -> Tensor:
    """(N, 3, S, S) -> (N, 3, h, w) around the mouth."""
    shift = feature_shift(pose)
    return aligned_crop(frames, pose, shift + shift.new_tensor([0.0, layout.MOUTH_Y]), MOUTH_WINDOW, hw)


# Target codes: what each network is trained to output.

def encode_pose(pose: Tensor, size: int) -> Tensor:
    """(N, 6) pose in pixels of a `size` frame -> (N, 6) normalised."""
    scaled = torch.cat([pose[:, :4], pose[:, 4:] / size], 1)
    return (scaled - pose.new_tensor(POSE_CENTRE)) / pose.new_tensor(POSE_SPREAD)


def decode_pose(code: Tensor, size: int) -> Tensor:
    pose = code * code.new_tensor(POSE_SPREAD) + code.new_tensor(POSE_CENTRE)
    return torch.cat([pose[:, :4], pose[:, 4:] * size], 1)


def coarse_targets(scene: Scene, size: int) -> Tensor:
    """(N, 19): pose (6), identity (13)."""
    return torch.cat([encode_pose(scene.pose, size), (scene.identity - IDENTITY_CENTRE) / IDENTITY_SPREAD], 1)


def face_targets(scene: Scene, estimate: Tensor, size: int) -> Tensor:
    """(N, 7) for a crop made at `estimate`: yaw, pitch, roll error, log scale ratio, true face
    centre in the crop's face units (2), aspect."""
    roll = torch.deg2rad(estimate[:, 2])
    radius, true_radius = estimate[:, 3] * size / 2, scene.pose[:, 3] * size / 2
    d = scene.pose[:, 4:6] - estimate[:, 4:6]
    cu = (roll.cos() * d[:, 0] + roll.sin() * d[:, 1]) / radius
    cv = (-roll.sin() * d[:, 0] + roll.cos() * d[:, 1]) / radius
    spread = scene.pose.new_tensor(RESIDUAL_SPREAD)
    return torch.stack([
        scene.pose[:, 0] / POSE_SPREAD[0], scene.pose[:, 1] / POSE_SPREAD[1],
        (scene.pose[:, 2] - estimate[:, 2]) / spread[0], torch.log(true_radius / radius) / spread[1],
        cu / spread[2], cv / spread[3], (scene.identity[:, 0] - ASPECT_CENTRE) / ASPECT_SPREAD,
    ], 1)


def apply_face(code: Tensor, estimate: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Face-stage output for a crop made at `estimate` -> (new pose (N, 6), aspect (N,))."""
    spread = code.new_tensor(RESIDUAL_SPREAD)
    roll = torch.deg2rad(estimate[:, 2])
    radius = estimate[:, 3] * size / 2
    cu, cv = code[:, 4] * spread[2] * radius, code[:, 5] * spread[3] * radius
    pose = torch.stack([
        code[:, 0] * POSE_SPREAD[0], code[:, 1] * POSE_SPREAD[1], estimate[:, 2] + code[:, 2] * spread[0],
        estimate[:, 3] * torch.exp(code[:, 3] * spread[1]),
        estimate[:, 4] + roll.cos() * cu - roll.sin() * cv, estimate[:, 5] + roll.sin() * cu + roll.cos() * cv,
    ], 1)
    return pose, code[:, 6] * ASPECT_SPREAD + ASPECT_CENTRE


FACE_OUTPUTS = 7


def as_frames(frames: Tensor) -> Tensor:
    """(H, W, 3) / (N, H, W, 3) / (3, H, W) / (N, 3, H, W), uint8 or float in [0, 1] -> (N, 3, H, W) float."""
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise ValueError(f"expected RGB frames (H, W, 3) or (N, 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"synthetic frames are square, got {tuple(x.shape[-2:])}")
    return x


class SynthProbe(nn.Module):
    """The probe. forward(frames) -> ProbeReading; frames as `as_frames` accepts (any square size).

    Always reads in eval mode (BatchNorm running statistics); use `train_probe` to train."""

    def __init__(self, config: ProbeConfig = ProbeConfig()):
        super().__init__()
        self.config = c = config
        self.coarse = ConvRegressor((c.size // 2, c.size // 2), c.coarse_channels, c.coarse_strides, c.hidden,
                                    6 + len(IDENTITY_NAMES))
        self.face = ConvRegressor((c.face_crop, c.face_crop), c.face_channels, c.face_strides, c.hidden, FACE_OUTPUTS)
        self.eye = ConvRegressor(tuple(c.eye_crop), c.eye_channels, c.eye_strides, c.eye_hidden, 1)
        self.mouth = ConvRegressor(tuple(c.mouth_crop), c.mouth_channels, c.mouth_strides, c.mouth_hidden, 1)
        self.report: dict = {}  # training report and file digest, set by `load_probe`
        self.sha256: str | None = None

    def prepare(self, frames: Tensor) -> tuple[Tensor, float]:
        """-> frames (N, 3, size, size) on the probe's device, and the input-pixels-per-probe-pixel factor."""
        x = as_frames(frames).to(next(self.parameters()).device)
        factor = x.shape[-1] / self.config.size
        if x.shape[-1] != self.config.size:
            x = F.interpolate(x, size=(self.config.size, self.config.size), mode="area" if factor > 1 else "bilinear")
        return x, factor

    def read_prepared(self, x: Tensor, passes: int | None = None) -> ProbeReading:
        """x (N, 3, size, size) in [0, 1] -> reading with tx, ty in probe pixels."""
        size = self.config.size
        coarse = self.coarse(F.avg_pool2d(x, 2))
        pose, identity = decode_pose(coarse[:, :6], size), coarse[:, 6:] * IDENTITY_SPREAD + IDENTITY_CENTRE
        aspect = identity[:, 0]
        for _ in range(self.config.passes if passes is None else passes):
            pose, aspect = apply_face(self.face(face_crop(x, pose, self.config.face_crop)), pose, size)
        eyes = self.eye(eye_crops(x, pose, tuple(self.config.eye_crop)))[:, 0] * EYES_SPREAD + EYES_CENTRE
        eyes = torch.stack(eyes.chunk(2), 1).clamp(min=0)
        mouth = self.mouth(mouth_crop(x, pose, tuple(self.config.mouth_crop)))[:, 0] * MOUTH_SPREAD + MOUTH_CENTRE
        mouth = mouth.clamp(0, 1)
        identity = torch.cat([aspect[:, None], identity[:, 1:]], 1)
        return ProbeReading(mouth=mouth, eyes=eyes, pose=pose, identity=identity)

    @torch.no_grad()
    def forward(self, frames: Tensor, chunk: int = 256) -> ProbeReading:
        was_training = self.training
        self.eval()
        try:
            readings = []
            for part in as_frames(frames).split(chunk):
                x, factor = self.prepare(part)
                reading = self.read_prepared(x)
                reading.pose = torch.cat([reading.pose[:, :4], reading.pose[:, 4:] * factor], 1)
                readings.append(reading)
            return ProbeReading.cat(readings)
        finally:
            self.train(was_training)

    def config_dict(self) -> dict:
        return asdict(self.config)
