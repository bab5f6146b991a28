"""Synthetic talking heads with known ground truth: the built-in dataset of `make demo` and the tests.

Each video has an identity (face shape, skin/hair/background colours, voice pitch, blink rate),
smooth random head motion (yaw, pitch, roll, scale, tx, ty), natural blinks (0.2-0.8 per second,
3-6 frames each) and speech-like audio whose loudness sets the mouth opening frame by frame:

    mouth[t] = clip(rms(audio of frame t) / MOUTH_RMS, 0, 1)

so lip sync is learnable from the audio and testable against the ground truth.  Output per
video: `<id>.mp4` (H.264, 25 fps), `<id>.wav` (16 kHz), `<id>.npz` (pose, blink, mouth,
face_box, mouth_lmk, eye_lmk) and `<id>.json` (metadata incl. blink onsets): the layout that real-data
prep writes after face cropping and landmarking.  Deterministic for a seed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dawn_train.data import face_layout as layout
from dawn_train.data.prepared import write_prepared
from dawn_train.data.schema import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, SCHEMA_VERSION
from dawn_train.data.video import Encoding, encode_mp4

MOUTH_RMS = 0.15  # audio RMS at which the mouth is fully open
# Bumped whenever the same seed draws other frames or labels, so that a rerun re-renders the videos of an older
# renderer instead of keeping them.  2: ellipse edges end at the ellipse (closed eyes and mouths were lines across
# the face), eye landmarks.
RENDERER_VERSION = 2
EYE_ANGLES = np.pi * np.array([1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])  # the eye landmarks on the eye's ellipse


@dataclass(frozen=True)
class Identity:
    aspect: float  # face half-width / half-height
    skin: np.ndarray
    hair: np.ndarray
    background: tuple[np.ndarray, np.ndarray]
    lips: np.ndarray
    texture_phase: np.ndarray
    f0: float  # voice pitch, Hz
    blink_rate: float  # blinks per second
    eye_open: float  # lid distance / eye width with open eyes


def random_identity(rng: np.random.Generator) -> Identity:
    skin = rng.uniform([0.55, 0.35, 0.25], [0.95, 0.8, 0.7])
    return Identity(
        aspect=rng.uniform(0.72, 0.86), skin=skin, hair=rng.uniform(0.02, 0.5, 3) * rng.uniform(0.3, 1.0),
        background=(rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)),
        lips=np.clip(skin * [1.0, 0.55, 0.55] + [0.05, 0, 0], 0, 1), texture_phase=rng.uniform(0, 2 * np.pi, 4),
        f0=rng.uniform(100, 220), blink_rate=rng.uniform(0.2, 0.8), eye_open=rng.uniform(*layout.EYE_OPEN),
    )


def speech_audio(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    """Speech-like 16 kHz audio (L,): phrases of syllables (voiced harmonics with two formant
    peaks, or noise bursts) separated by pauses."""
    n = int(round(seconds * SAMPLE_RATE))
    audio = np.zeros(n, dtype=np.float64)
    t = rng.uniform(0.1, 0.5)
    while t < seconds:
        for _ in range(rng.integers(3, 9)):  # one phrase
            duration = rng.uniform(0.12, 0.3)
            start, stop = int(t * SAMPLE_RATE), min(n, int((t + duration) * SAMPLE_RATE))
            if stop <= start:
                break
            time = np.arange(stop - start) / SAMPLE_RATE
            envelope = np.sin(np.pi * time / duration) ** 2 * rng.uniform(0.4, 1.0)
            if rng.random() < 0.8:
                pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * time + rng.uniform(0, 6)))
                phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
                formants = rng.uniform([300, 900], [800, 2200])
                wave = sum(
                    np.exp(-((k * f0 - formants[0]) / 250) ** 2) * np.sin(k * phase)
                    + 0.6 * np.exp(-((k * f0 - formants[1]) / 350) ** 2) * np.sin(k * phase)
                    for k in range(1, int(4000 // f0))
                )
                wave = wave / (np.abs(wave).max() + 1e-8) * 0.35
            else:
                wave = rng.standard_normal(stop - start) * 0.08
            audio[start:stop] += envelope * wave
            t += duration + rng.uniform(0.0, 0.06)
        t += rng.uniform(0.2, 0.6)
    return np.clip(audio, -1, 1).astype(np.float32)


def mouth_from_audio(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """The ground-truth mouth opening (T,) in [0, 1]: RMS loudness of each frame's 40 ms of audio."""
    padded = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    padded[: min(len(padded), len(audio))] = audio[: len(padded)]
    rms = np.sqrt((padded.reshape(n_frames, SAMPLES_PER_FRAME) ** 2).mean(axis=1))
    return np.clip(rms / MOUTH_RMS, 0.0, 1.0).astype(np.float32)


def smooth_motion(rng: np.random.Generator, n_frames: int, amplitude: float) -> np.ndarray:
    """A smooth random curve (T,): three sinusoids of 0.05-0.6 Hz with random phases."""
    time = np.arange(n_frames) / FPS
    freqs, phases, weights = rng.uniform(0.05, 0.6, 3), rng.uniform(0, 2 * np.pi, 3), rng.dirichlet(np.ones(3))
    return amplitude * (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * time + phases[:, None])).sum(0)


def head_pose(rng: np.random.Generator, n_frames: int, size: int, mouth: np.ndarray) -> np.ndarray:
    """Pose (T, 6): yaw, pitch, roll (degrees), scale (face height / crop size), tx, ty (pixels).
    Speaking adds small nods, as real speakers do (this is what BAS measures)."""
    nod = np.convolve(mouth, np.ones(5) / 5, mode="same")
    pose = np.stack([
        smooth_motion(rng, n_frames, 14.0),
        smooth_motion(rng, n_frames, 6.0) + 4.0 * (nod - nod.mean()),
        smooth_motion(rng, n_frames, 5.0),
        rng.uniform(0.62, 0.72) + smooth_motion(rng, n_frames, 0.03),
        size / 2 + rng.uniform(-0.03, 0.03) * size + smooth_motion(rng, n_frames, 0.04 * size),
        size / 2 + rng.uniform(0.0, 0.04) * size + smooth_motion(rng, n_frames, 0.03 * size),
    ], axis=1)
    return pose.astype(np.float32)


def blinks(rng: np.random.Generator, n_frames: int, identity: Identity) -> tuple[np.ndarray, list[list[int]]]:
    """Eye openness (T, 2) and the blink list [[start_frame, length], ...]."""
    openness = np.tile(identity.eye_open * np.array([1.0, rng.uniform(0.93, 1.07)]), (n_frames, 1))
    events, t = [], rng.exponential(1.0 / identity.blink_rate)
    while True:
        start, length = int(t * FPS), int(rng.integers(3, 7))
        if start + length > n_frames:
            break
        closure = np.sin(np.pi * (np.arange(length) + 0.5) / length)  # 0 -> 1 -> 0 over the blink
        openness[start:start + length] *= (1 - layout.BLINK_DEPTH * closure)[:, None]
        events.append([start, length])
        t += length / FPS + 0.4 + rng.exponential(1.0 / identity.blink_rate)
    return openness.astype(np.float32), events


class FaceCanvas:
    """Draws anti-aliased ellipses in face coordinates (face half-height = 1, y down)."""

    def __init__(self, size: int, pose: np.ndarray, identity: Identity):
        yaw, pitch, roll = np.deg2rad(pose[:3])
        self.radius = pose[3] * size / 2  # face half-height in pixels
        self.cos, self.sin = np.cos(roll), np.sin(roll)
        self.centre = pose[4:6]
        self.aspect = identity.aspect * (1 - layout.YAW_NARROWING * abs(np.sin(yaw)))
        # eyes, nose and mouth follow the head turn
        self.shift = np.array([layout.YAW_SHIFT * np.sin(yaw), layout.PITCH_SHIFT * np.sin(pitch)])
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        u, v = xs - self.centre[0], ys - self.centre[1]
        self.fu = (self.cos * u + self.sin * v) / self.radius
        self.fv = (-self.sin * u + self.cos * v) / self.radius

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Face coordinates (N, 2) -> crop pixels (N, 2)."""
        fu, fv = points[:, 0] * self.radius, points[:, 1] * self.radius
        return np.stack([self.centre[0] + self.cos * fu - self.sin * fv, self.centre[1] + self.sin * fu + self.cos * fv], 1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        """Coverage (H, W) in [0, 1] of an ellipse, soft over about one pixel.  The distance to the outline is the
        larger of two lower bounds of it, (q - 1) / |grad q| (q, the normalised radius, is convex; exact along both
        axes) and the distance to the bounding box, so a thin ellipse (a closed eye or mouth) ends at its own width
        (a soft edge of width min(rx, ry) once drew a line max(rx, ry) / min(rx, ry) times too long)."""
        x, y = (self.fu - cx) / rx, (self.fv - cy) / ry
        q, grad = np.sqrt(x ** 2 + y ** 2), np.sqrt((x / rx) ** 2 + (y / ry) ** 2)  # grad = q |grad q|
        first_order = np.where(grad > 1e-12, (q - 1) * q / np.maximum(grad, 1e-12), -min(rx, ry))  # 0/0 at the centre
        box = np.maximum(np.abs(x * rx) - rx, np.abs(y * ry) - ry)
        return np.clip(0.5 - np.maximum(first_order, box) * self.radius, 0, 1)


def render_frame(size: int, pose: np.ndarray, openness: np.ndarray, mouth: float, identity: Identity,
                 background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame: (H, W, 3) uint8, face box (4,), mouth landmarks (20, 2), eye landmarks (12, 2)."""
    canvas, image = FaceCanvas(size, pose, identity), background.copy()

    def paint(alpha: np.ndarray, colour) -> None:
        image[:] = image * (1 - alpha[..., None]) + alpha[..., None] * np.asarray(colour)

    a, (dx, dy) = canvas.aspect, canvas.shift
    hair = canvas.ellipse(0, layout.HAIR_Y, a * layout.HAIR_WIDTH, layout.HAIR_HALF_HEIGHT)
    paint(hair, identity.hair)
    face = canvas.ellipse(0, 0, a, 1.0)
    p = identity.texture_phase  # low-frequency shading that moves with the face, so flow is visible
    shading = 1 + 0.08 * np.sin(3 * canvas.fu + p[0]) * np.sin(4 * canvas.fv + p[1]) - 0.12 * (canvas.fu ** 2)
    paint(face, np.clip(identity.skin * shading[..., None], 0, 1))
    paint(hair * (canvas.fv < -0.62 + 0.08 * np.sin(5 * canvas.fu + p[2])), identity.hair)
    eye_points = []
    for side, eye_open in zip((-1, 1), openness):  # image-left eye first
        cx, cy = side * layout.EYE_X + dx, layout.EYE_Y + dy
        brow = canvas.ellipse(cx, cy - layout.BROW_ABOVE, layout.BROW_HALF_WIDTH, layout.BROW_HALF_HEIGHT)
        paint(brow, identity.hair * 0.6)
        half_height = max(eye_open * layout.EYE_HALF_WIDTH, 1e-3)
        sclera = canvas.ellipse(cx, cy, layout.EYE_HALF_WIDTH, half_height)
        paint(sclera, (0.95, 0.95, 0.95))
        pupil = canvas.ellipse(cx + layout.PUPIL_FOLLOW * dx, cy, layout.PUPIL_RADIUS, layout.PUPIL_RADIUS)
        paint(sclera * pupil, (0.1, 0.07, 0.05))
        # 68-point order: left corner, two upper-lid points, right corner, two lower-lid points
        eye_points.append(np.stack([cx + layout.EYE_HALF_WIDTH * np.cos(EYE_ANGLES),
                                    cy - half_height * np.sin(EYE_ANGLES)], 1))
    nose = canvas.ellipse(layout.NOSE_FOLLOW * dx, layout.NOSE_Y + dy, layout.NOSE_HALF_WIDTH, layout.NOSE_HALF_HEIGHT)
    paint(nose, identity.skin * 0.8)
    mx, my = dx, layout.MOUTH_Y + dy
    outer_h, inner_h = layout.LIPS_CLOSED + layout.LIPS_GAIN * mouth, layout.INSIDE_CLOSED + layout.INSIDE_GAIN * mouth
    paint(canvas.ellipse(mx, my, layout.LIPS_HALF_WIDTH, outer_h), identity.lips)
    paint(canvas.ellipse(mx, my, layout.INSIDE_HALF_WIDTH, inner_h), (0.2, 0.05, 0.05))

    angles_outer, angles_inner = np.linspace(0, 2 * np.pi, 13)[:-1], np.linspace(0, 2 * np.pi, 9)[:-1]
    lips = np.concatenate([
        np.stack([mx + layout.LIPS_HALF_WIDTH * np.cos(angles_outer), my + outer_h * np.sin(angles_outer)], 1),
        np.stack([mx + layout.INSIDE_HALF_WIDTH * np.cos(angles_inner), my + inner_h * np.sin(angles_inner)], 1),
    ])
    half_x = canvas.radius * np.hypot(a * canvas.cos, canvas.sin)
    half_y = canvas.radius * np.hypot(a * canvas.sin, canvas.cos)
    box = np.array([pose[4] - half_x, pose[5] - half_y, pose[4] + half_x, pose[5] + half_y], dtype=np.float32)
    frame = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    eyes = canvas.to_pixels(np.concatenate(eye_points)).astype(np.float32)
    return frame, box, canvas.to_pixels(lips).astype(np.float32), eyes


def synth_video(seed: int, index: int, seconds: float, size: int) -> dict:
    """Render one video; returns frames (T,H,W,3) uint8, audio (L,), labels and metadata."""
    rng = np.random.default_rng([seed, index])
    identity = random_identity(rng)
    n_frames = int(round(seconds * FPS))
    audio = speech_audio(rng, n_frames / FPS, identity.f0)
    mouth = mouth_from_audio(audio, n_frames)
    pose = head_pose(rng, n_frames, size, mouth)
    openness, events = blinks(rng, n_frames, identity)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    background = (1 - ramp) * identity.background[0] + ramp * identity.background[1]
    background = np.broadcast_to(background, (size, size, 3)).astype(np.float32)
    rendered = [render_frame(size, pose[t], openness[t], mouth[t], identity, background) for t in range(n_frames)]
    frames, boxes, lips, eyes = (np.stack(parts) for parts in zip(*rendered))
    video_id = f"synth{index:05d}"
    meta = {
        "video_id": video_id, "speaker": f"speaker{index:05d}", "fps": FPS, "n_frames": n_frames, "size": size,
        "sample_rate": SAMPLE_RATE, "seed": seed, "blinks": events, "source": "synth", "schema_version": SCHEMA_VERSION,
        "renderer": RENDERER_VERSION,
        "pose_units": "yaw/pitch/roll degrees, scale = face height / crop size, tx/ty = face centre in pixels",
    }
    labels = {"pose": pose, "blink": openness, "mouth": mouth, "face_box": boxes, "mouth_lmk": lips,
              "eye_lmk": eyes}
    return {"frames": frames, "audio": audio, "labels": labels, "meta": meta}


def write_video(out: Path, video: dict, encoding: Encoding = Encoding()) -> None:
    """Write one rendered video in the prepared-video layout (`data/prepared.py`)."""
    meta = video["meta"]
    write_prepared(out, meta["video_id"], encode_mp4(video["frames"], FPS, encoding), video["audio"], video["labels"], meta)


def _render_and_write(args) -> str:
    out, seed, index, seconds, size, encoding = args
    video = synth_video(seed, index, seconds, size)
    write_video(out, video, encoding)
    return video["meta"]["video_id"]


def is_current(out: Path, seed: int, index: int, seconds: float, size: int) -> bool:
    """Whether video `index` in `out` is complete and what this renderer draws for these options (else it is
    rendered again: a rerun with another seed, length or size, or after a renderer change, never mixes videos)."""
    try:
        meta = json.loads((out / f"synth{index:05d}.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {"seed": seed, "size": size, "n_frames": int(round(seconds * FPS)), "renderer": RENDERER_VERSION}
    return isinstance(meta, dict) and all(meta.get(key) == value for key, value in wanted.items())


def synth_dataset(out: str | Path, videos: int, seconds: float, size: int, seed: int = 0, workers: int = 1,
                  encoding: Encoding = Encoding(), progress: bool = True) -> list[str]:
    """Render `videos` videos into `out`; videos already complete there with the same options are kept (resumable)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    if size not in (64, 128, 256):
        raise ValueError(f"--size must be 64, 128 or 256, got {size}")
    if videos < 1 or seconds <= 0:
        raise ValueError(f"need videos >= 1 and seconds > 0, got {videos}, {seconds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(out, seed, i, seconds, size, encoding) for i in range(videos) if not is_current(out, seed, i, seconds, size)]
    bar = tqdm(total=videos, initial=videos - len(todo), desc="synth videos", disable=not progress)
    if workers > 1 and len(todo) > 1:
        with get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_and_write, todo):
                bar.update()
    else:
        for job in todo:
            _render_and_write(job)
            bar.update()
    bar.close()
    return [f"synth{i:05d}" for i in range(videos)]
