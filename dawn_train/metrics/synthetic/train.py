"""Training, saving, loading and checking the synthetic probe (`dawn-train data probe`).

Training data are made on the fly: independent scenes from `render.sample_scenes`, rendered at
the probe size (3/4 of a batch) and at twice that size then area-reduced (1/4, what 128-px videos
look like to the probe), half of the batches sent through an H.264 round trip at a random CRF
(the dataset's videos are mp4), a quarter of the frames slightly blurred and all lightly noised
(generated frames are neither sharp nor clean). Nothing is downloaded.

The probe file holds {"format", "config", "state_dict", "report"}: the architecture is rebuilt
from `config` and the weights load strictly (names and shapes checked first).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dawn_train.data.synth import random_identity, synth_video
from dawn_train.data.video import Encoding, decode_all, encode_mp4
from dawn_train.log import get_logger
from dawn_train.metrics.synthetic.probe import (
    EYES_CENTRE,
    EYES_SPREAD,
    MOUTH_CENTRE,
    MOUTH_SPREAD,
    ProbeConfig,
    SynthProbe,
    coarse_targets,
    eye_crops,
    face_crop,
    face_targets,
    mouth_crop,
)
from dawn_train.metrics.synthetic.render import Scene, identity_vector, quantize, render, sample_scenes
from dawn_train.metrics.weights import WeightSpec, check_state_dict, resolve, sha256_of

log = get_logger(__name__)

FORMAT = "dawn_train.synth_probe/1"
PROBE_WEIGHTS = WeightSpec(
    metric="synthetic probe",
    filename="synth_probe.pt",
    layout=f"torch file {{'format': '{FORMAT}', 'config': ProbeConfig fields, 'state_dict': SynthProbe, 'report'}}",
    source="`dawn-train data probe --out FILE` (dawn_train.metrics.synthetic.train_probe; a few CPU minutes)",
)
EVAL_SEED = 90210  # held-out videos: identities drawn from this seed are never rendered in training
# Pose perturbations (yaw, pitch, roll deg, scale, tx, ty probe px) around the truth that the aligned
# stages are trained to undo: the face stage sees coarse-stage errors, the eye and mouth stages
# face-stage errors.
FACE_JITTER = (2.0, 2.0, 1.0, 0.01, 0.4, 0.4)
EYE_JITTER = (0.8, 0.8, 0.3, 0.003, 0.08, 0.08)


def jitter(gen: torch.Generator, pose: Tensor, sigma: tuple[float, ...], wide: float) -> Tensor:
    """Gaussian pose errors; a fraction `wide` of them 2.5 times larger (the tail of real errors)."""
    k = torch.where(torch.rand(len(pose), 1, generator=gen) < wide, 2.5, 1.0)
    return pose + torch.randn(pose.shape, generator=gen) * pose.new_tensor(sigma) * k


def mp4_round_trip(frames: Tensor, crf: int) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> the same after H.264 (yuv420p) encoding and decoding."""
    data = (frames * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
    decoded = decode_all(encode_mp4(data, encoding=Encoding(crf=crf)))
    return torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255


def gaussian_blur(gen: torch.Generator, x: Tensor, fraction: float, max_sigma: float) -> Tensor:
    """Blur a random `fraction` of the frames (N, 3, H, W) with sigma ~ U(0, max_sigma) pixels."""
    n = len(x)
    sigma = torch.rand(n, generator=gen) * max_sigma * (torch.rand(n, generator=gen) < fraction)
    r = max(1, int(math.ceil(3 * max_sigma)))
    taps = torch.arange(-r, r + 1, dtype=x.dtype)
    w = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    w = (w / w.sum(1, keepdim=True))[:, :, None, None, None]  # (N, 2r + 1, 1, 1, 1)
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    rows = sum(w[:, i] * padded[..., i:i + x.shape[-1]] for i in range(2 * r + 1))
    return sum(w[:, i] * rows[..., i:i + x.shape[-2], :] for i in range(2 * r + 1))


@dataclass(frozen=True)
class Augment:
    """How training frames are made to look like dataset and generated frames."""

    large_fraction: float = 0.25  # of a batch rendered at twice the probe size, then area-reduced
    mp4_fraction: float = 0.5  # of the sub-batches sent through H.264 at a CRF in [15, 25]
    blur_fraction: float = 0.3  # of the frames blurred with sigma ~ U(0, max_blur) probe pixels
    max_blur: float = 1.5
    noise: float = 0.01  # Gaussian pixel noise, sigma ~ U(0, noise)


def training_batch(gen: torch.Generator, batch_size: int, size: int, augment: Augment = Augment()
                   ) -> tuple[Tensor, Scene]:
    """Frames (B, 3, size, size) in [0, 1] and their scenes (pose in probe pixels)."""
    n_large = int(round(batch_size * augment.large_fraction))
    parts, scenes = [], []
    for n, render_size in ((batch_size - n_large, size), (n_large, 2 * size)):
        if n == 0:
            continue
        scene = sample_scenes(gen, n, render_size)
        x = quantize(render(scene, render_size))
        if torch.rand((), generator=gen) < augment.mp4_fraction:
            x = mp4_round_trip(x, crf=int(torch.randint(15, 26, (), generator=gen)))
        if render_size != size:
            x = F.interpolate(x, size=(size, size), mode="area")
            scene.pose[:, 4:] *= size / render_size
        parts.append(x)
        scenes.append(scene)
    x = torch.cat(parts)
    if augment.blur_fraction > 0:
        x = gaussian_blur(gen, x, fraction=augment.blur_fraction, max_sigma=augment.max_blur)
    x = x + torch.randn(x.shape, generator=gen) * augment.noise * torch.rand(len(x), 1, 1, 1, generator=gen)
    return x.clamp(0, 1), Scene.cat(scenes)


def probe_losses(probe: SynthProbe, x: Tensor, scene: Scene, gen: torch.Generator, feature_crops: int = 2
                 ) -> dict[str, Tensor]:
    """Mean squared errors of the four networks on normalised targets."""
    c = probe.config
    coarse = F.mse_loss(probe.coarse(F.avg_pool2d(x, 2)), coarse_targets(scene, c.size))
    estimate = jitter(gen, scene.pose, FACE_JITTER, wide=0.3)
    face = F.mse_loss(probe.face(face_crop(x, estimate, c.face_crop)), face_targets(scene, estimate, c.size))
    # The eye and mouth networks are cheap: each frame gives them `feature_crops` differently jittered crops.
    x, pose = x.repeat(feature_crops, 1, 1, 1), scene.pose.repeat(feature_crops, 1)
    estimate = jitter(gen, pose, EYE_JITTER, wide=0.2)
    eyes = torch.cat(scene.eyes.repeat(feature_crops, 1).unbind(1))  # left eyes, then right eyes, as eye_crops orders
    eye = F.mse_loss(probe.eye(eye_crops(x, estimate, tuple(c.eye_crop)))[:, 0], (eyes - EYES_CENTRE) / EYES_SPREAD)
    mouth = F.mse_loss(probe.mouth(mouth_crop(x, estimate, tuple(c.mouth_crop)))[:, 0],
                       (scene.mouth.repeat(feature_crops) - MOUTH_CENTRE) / MOUTH_SPREAD)
    return {"coarse": coarse, "face": face, "eye": eye, "mouth": mouth}


def train_probe(out: str | Path, *, steps: int = 1000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                config: ProbeConfig = ProbeConfig(), augment: Augment = Augment(), batch_reuse: int = 2,
                eval_videos: int = 8, eval_seconds: float = 4.0, log_every: int = 100) -> dict:
    """Train a probe on rendered frames, check it on held-out synthetic videos and save it to `out`.

    Returns the report saved with it: {"steps", ..., "seconds", "cpu_seconds", "final_losses",
    "eval": {"64px": evaluate_probe(...), "128px": ...}}. The defaults take about 7 CPU minutes on one
    thread (see README.md for the accuracy they reach).
    """
    if steps < 1 or batch_size < 2 or batch_reuse < 1:
        raise ValueError(f"need steps >= 1, batch_size >= 2 and batch_reuse >= 1, got {steps}, {batch_size} and "
                         f"{batch_reuse}")
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = SynthProbe(config).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start, cpu_start, losses = time.time(), time.process_time(), {}
    for step in range(steps):
        if step % batch_reuse == 0:  # reused batches still give the aligned stages new crops
            x, scene = training_batch(gen, batch_size, config.size, augment)
        parts = probe_losses(probe, x, scene, gen)
        opt.zero_grad(set_to_none=True)
        sum(parts.values()).backward()
        opt.step()
        sched.step()
        losses = {k: float(v.detach()) for k, v in parts.items()}
        if log_every and (step % log_every == 0 or step == steps - 1):
            log.info("probe step %d/%d %s (%.0f s)", step + 1, steps,
                     " ".join(f"{k} {v:.4f}" for k, v in losses.items()), time.time() - start)
    probe.eval()
    report = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "augment": asdict(augment),
              "seconds": round(time.time() - start, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1),
              "final_losses": losses}
    if eval_videos:
        report["eval"] = {f"{size}px": evaluate_probe(probe, videos=eval_videos, seconds=eval_seconds, size=size)
                          for size in (64, 128)}
    save_probe(probe, out, report)
    return report


def save_probe(probe: SynthProbe, path: str | Path, report: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "config": probe.config_dict(), "state_dict": probe.state_dict(),
                "report": report or {}}, tmp)
    tmp.replace(path)


def load_probe(path: str | Path | None, map_location: str | torch.device = "cpu") -> SynthProbe:
    """Rebuild the probe from its file; raises MetricUnavailable when there is no file, ValueError
    when the file does not match its own config."""
    path = resolve(path, PROBE_WEIGHTS)
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a synthetic probe file (expected format {FORMAT!r})")
    probe = SynthProbe(ProbeConfig.from_dict(blob["config"]))
    check_state_dict(probe, blob["state_dict"], what=f"synthetic probe {path}")
    probe.load_state_dict(blob["state_dict"], strict=True)
    probe.report, probe.sha256 = blob.get("report", {}), sha256_of(path)
    return probe.eval()


def video_identity(seed: int, index: int) -> np.ndarray:
    """(13,) visible identity of `synth_video(seed, index, ...)` (its first random draw)."""
    return identity_vector(random_identity(np.random.default_rng([seed, index])))


def r2_score(pred: Tensor, true: Tensor) -> float:
    """Coefficient of determination over all elements."""
    pred, true = pred.double().flatten(), true.double().flatten()
    return float(1 - ((pred - true) ** 2).sum() / ((true - true.mean()) ** 2).sum().clamp(min=1e-12))


def evaluate_probe(probe: SynthProbe, *, videos: int = 8, seconds: float = 4.0, size: int = 64,
                   seed: int = EVAL_SEED, mp4: bool = True) -> dict:
    """Accuracy on held-out synthetic videos (new identities), read from their H.264 frames as the
    dataset stores them (`mp4=False`: the rendered frames). Angles in degrees, tx/ty in pixels of `size`."""
    readings, labels, identities = [], [], []
    for index in range(videos):
        video = synth_video(seed, index, seconds, size)
        frames = decode_all(encode_mp4(video["frames"])) if mp4 else video["frames"]
        readings.append(probe(torch.from_numpy(frames)))
        labels.append(video["labels"])
        identities.append(np.broadcast_to(video_identity(seed, index), (len(frames), 13)))
    read = {k: torch.cat([r.as_dict()[k] for r in readings]) for k in ("mouth", "eyes", "pose", "identity")}
    true = {k: torch.from_numpy(np.concatenate([lab[k] for lab in labels])) for k in ("mouth", "blink", "pose")}
    err = (read["pose"] - true["pose"]).abs()
    id_err = (read["identity"] - torch.from_numpy(np.concatenate(identities))).abs()
    angles = ("yaw", "pitch", "roll")
    return {
        "frames": len(err),
        "mouth_r2": r2_score(read["mouth"], true["mouth"]),
        "eyes_r2": r2_score(read["eyes"], true["blink"]),
        "eyes_mae": float((read["eyes"] - true["blink"]).abs().mean()),
        **{f"{name}_mae_deg": float(err[:, i].mean()) for i, name in enumerate(angles)},
        **{f"{name}_rmse_deg": float(err[:, i].pow(2).mean().sqrt()) for i, name in enumerate(angles)},
        "scale_mae": float(err[:, 3].mean()), "txy_mae_px": float(err[:, 4:].mean()),
        "aspect_mae": float(id_err[:, 0].mean()), "colour_mae": float(id_err[:, 1:].mean()),
    }
