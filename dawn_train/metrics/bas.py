"""BAS: beat alignment score between audio beats and head-motion beats.

Formulation: the Beat Alignment Score of AI Choreographer (Li et al., ICCV 2021, "FACT", eq. in
Sec. 5.1) with Bailando's kinematic beats (Siyao et al., CVPR 2022, `utils/metrics_new.py`
`calc_db` / `BA`), as talking-head papers (DAWN Table 1, 0.267 on HDTF ground truth) use it for
head pose:

    BAS = 1/|B_m| * sum_{t in B_m} exp(-min_{s in B_a} (t - s)^2 / (2 sigma^2)),  sigma = 3 frames

- motion beats B_m: strict local minima (scipy `argrelextrema(np.less)`) of the head-motion speed
  |pose_{t+1} - pose_t| over `pose_dims` (default the three Euler angles, degrees), smoothed by a
  Gaussian of `motion_smooth` = 5 frames (Bailando's `G(kinetic_vel, 5)`);
- audio beats B_a: peaks of an onset-strength envelope computed as librosa.onset.onset_strength
  (power mel spectrogram, 128 Slaney mels, n_fft 2048, hop = one video frame (640 samples at
  16 kHz / 25 fps), centred frames, dB with 80 dB floor, positive first difference averaged over
  mels), picked as in librosa's `peak_pick`: after scaling the envelope to [0, 1], a frame is a beat
  where it is the maximum of +-`peak_radius` frames and exceeds the mean of +-`avg_radius` frames by
  `delta` (0.07). Written with numpy/scipy, no librosa.

`over="audio"` averages over audio beats instead, which is what Bailando's released `BA()` loop
computes (it iterates music beats); the FACT paper's definition, over motion beats, is the default.
A video without motion beats (or, with over="audio", without audio beats) is skipped and counted.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch
from torch import Tensor

from dawn_train.data.audio import mel_filterbank
from dawn_train.data.schema import FPS, SAMPLE_RATE
from dawn_train.metrics.weights import Float64Metric


def motion_beats(pose: np.ndarray, smooth: float = 5.0) -> np.ndarray:
    """(T, D) motion -> frame indices of local minima of the smoothed speed (length T - 1).  A speed series shorter
    than the smoothing window (2 * smooth + 1 samples) has none: its minima would be the window's edge effects (a
    4-frame clip once "found" a beat in its middle frame)."""
    speed = np.linalg.norm(np.diff(np.asarray(pose, dtype=np.float64), axis=0), axis=1)
    if len(speed) < 2 * smooth + 1:
        return np.zeros(0, dtype=np.int64)
    if smooth > 0:
        speed = scipy.ndimage.gaussian_filter1d(speed, smooth)
    inner = speed[1:-1]
    return np.flatnonzero((inner < speed[:-2]) & (inner < speed[2:])) + 1


def onset_strength(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: int = FPS, n_fft: int = 2048,
                   n_mels: int = 128) -> np.ndarray:
    """(L,) float audio -> (1 + L // hop,) onset strength, one value per video frame (librosa-style)."""
    hop = sample_rate // fps
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True, pad_mode="constant",
                      return_complex=True).abs().pow(2).double().numpy()  # (F, N)
    mel = mel_filterbank(n_mels, n_fft, sample_rate).astype(np.float64) @ spec
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, db[:, 1:] - db[:, :-1]).mean(0)
    pad = 1 + n_fft // (2 * hop)  # lag + centring compensation, as librosa
    return np.concatenate([np.zeros(pad), flux])[: spec.shape[1]]


def pick_peaks(env: np.ndarray, peak_radius: int = 1, avg_radius: int = 3, delta: float = 0.07) -> np.ndarray:
    """Frame indices where the [0, 1]-scaled envelope is a local max and above its local mean + delta."""
    env = np.asarray(env, dtype=np.float64)
    env = env - env.min()
    env = env / (env.max() + np.finfo(float).tiny)
    local_max = scipy.ndimage.maximum_filter1d(env, 2 * peak_radius + 1, mode="constant", cval=0.0)
    local_avg = scipy.ndimage.uniform_filter1d(env, 2 * avg_radius + 1, mode="nearest")
    return np.flatnonzero((env == local_max) & (env >= local_avg + delta) & (env > 0))


def audio_beats(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: int = FPS, **peak_kwargs) -> np.ndarray:
    return pick_peaks(onset_strength(audio, sample_rate, fps), **peak_kwargs)


def beat_align_score(motion: np.ndarray, audio: np.ndarray, sigma: float = 3.0, over: str = "motion") -> float:
    """Mean over `over` beats of exp(-d^2 / (2 sigma^2)), d = distance (frames) to the nearest other beat.
    Returns nan when the averaged set is empty, 0 when the other set is empty."""
    assert over in ("motion", "audio"), over
    query, ref = (motion, audio) if over == "motion" else (audio, motion)
    query, ref = np.asarray(query, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if query.size == 0:
        return float("nan")
    if ref.size == 0:
        return 0.0
    dist2 = np.min((query[:, None] - ref[None, :]) ** 2, axis=1)
    return float(np.mean(np.exp(-dist2 / (2 * sigma**2))))


class BAS(Float64Metric):
    """Beat alignment score of head motion to speech (closer to ground truth is better).

    Args:
        sigma: tolerance in frames (3). over: "motion" (FACT) or "audio" (Bailando's code).
        pose_dims: which motion channels make the speed (default the three Euler angles of DAWN's
            6-d pose). motion_smooth: Gaussian sigma in frames for the speed (5, Bailando).

    update(pose, audio): pose (B, T, D) head pose per frame at 25 fps (degrees for angles);
    audio (B, L) float in [-1, 1] at 16 kHz, aligned with frame 0.
    compute(): scalar float64 tensor, mean over scored videos.
    """

    higher_is_better = None

    def __init__(self, *, sigma: float = 3.0, over: str = "motion", pose_dims: tuple[int, ...] = (0, 1, 2),
                 motion_smooth: float = 5.0, sample_rate: int = SAMPLE_RATE, fps: int = FPS, **kwargs):
        super().__init__(**kwargs)
        if over not in ("motion", "audio"):
            raise ValueError(f"over must be 'motion' or 'audio', got {over!r}")
        self.sigma, self.over, self.pose_dims = sigma, over, tuple(pose_dims)
        self.motion_smooth, self.sample_rate, self.fps = motion_smooth, sample_rate, fps
        self.add_state("score_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_skipped", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pose: Tensor | None = None, audio: Tensor | None = None, *,
               beats: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """pose (B, T, D) and audio (B, L), or `beats`: precomputed (motion, audio) beat frame indices
        per video."""
        if beats is None:
            if pose is None or audio is None or pose.ndim != 3 or audio.ndim != 2 or len(pose) != len(audio):
                shapes = [None if v is None else tuple(v.shape) for v in (pose, audio)]
                raise ValueError(f"expected pose (B, T, D) and audio (B, L) or beats=, got {shapes}")
            beats = [(motion_beats(p[:, list(self.pose_dims)], self.motion_smooth),
                      audio_beats(a, self.sample_rate, self.fps))
                     for p, a in zip(pose.double().cpu().numpy(), audio.float().cpu().numpy())]
        for motion, sound in beats:
            score = beat_align_score(motion, sound, self.sigma, self.over)
            if np.isnan(score):
                self.n_skipped += 1
            else:
                self.score_sum += score
                self.n += 1

    def compute(self) -> Tensor:
        return self.score_sum / self.n.clamp(min=1)
