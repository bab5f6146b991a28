"""LSE-D / LSE-C: SyncNet lip-sync distance and confidence (Wav2Lip's protocol on joonson/syncnet_python).

Per video, as `SyncNetInstance.evaluate` (syncnet_python; Wav2Lip's `SyncNetInstance_calc_scores.py`):
1. frames at 25 fps resized to 224x224 (Wav2Lip's `cv2.resize(img, (224, 224))`: bilinear, no
   antialias), BGR, float in [0, 255]; audio 16 kHz mono int16 -> 13 MFCC at 100 Hz
   (python_speech_features defaults, `mfcc_psf` below);
2. `min_length = min(T, floor(L / 640))`; for every start v < min_length - 5, the lip tower sees
   frames [v, v + 5) and the audio tower MFCC columns [4v, 4v + 20) -> embeddings (N, 1024);
3. offset search (`calc_pdist`): audio embeddings are zero-padded by `vshift` (15) rows at both ends;
   dists[i, j] = |video_i - audio_padded_{i + j}| for j in [0, 2 vshift]; mdist = mean over i;
   LSE-D = min(mdist), LSE-C = median(mdist) - min(mdist), AV offset = vshift - argmin.
The metric averages LSE-D and LSE-C over videos (Wav2Lip reports the mean over its test videos).

Deviations: the reference first runs S3FD face tracking and crops (`run_pipeline.py`) and decodes
JPEG frames written by ffmpeg; our inputs are already face crops (DAWN's 128 px outputs), so the
crop is the whole frame, upsampled to 224 as Wav2Lip's evaluation resizes, and no JPEG round trip.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from dawn_train.data.schema import FPS, SAMPLE_RATE
from dawn_train.metrics.networks.syncnet import SyncNet
from dawn_train.metrics.weights import NetworkMetric, WeightSpec, load_weights

SYNCNET_WEIGHTS = WeightSpec(
    metric="LSE-C/LSE-D",
    filename="syncnet_v2.model",
    layout="torch state dict of syncnet_python SyncNetModel.S(1024): netcnnaud.{0..18}, netfcaud.{0,1,3}, "
    "netcnnlip.{0..18}, netfclip.{0,1,3} (88 tensors; BatchNorm counters may be absent)",
    source="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model "
    "(joonson/syncnet_python download_model.sh)",
)
SYNC_SIZE = 224
WINDOW = 5  # video frames per SyncNet input (0.2 s)
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def mfcc_psf(signal: np.ndarray, sample_rate: int = SAMPLE_RATE, numcep: int = 13, nfilt: int = 26,
             nfft: int = 512, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """(L,) int16-scaled samples -> (n_frames, numcep), matching `python_speech_features.mfcc` defaults:
    25 ms frames every 10 ms (the last one zero-padded), no window, pre-emphasis 0.97, power spectrum
    |rfft(512)|^2 / 512, 26 triangular mel filters on floor((nfft + 1) * hz / sr) bins, log, DCT-II
    (ortho), first 13, sinusoidal lifter 22, coefficient 0 replaced by log frame energy; zeros -> eps."""
    sig = np.asarray(signal, dtype=np.float64)
    sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
    frame_len, step = int(math.floor(0.025 * sample_rate + 0.5)), int(math.floor(0.01 * sample_rate + 0.5))
    n_frames = 1 if len(sig) <= frame_len else 1 + math.ceil((len(sig) - frame_len) / step)
    sig = np.concatenate([sig, np.zeros((n_frames - 1) * step + frame_len - len(sig))])
    frames = sig[np.arange(frame_len)[None, :] + step * np.arange(n_frames)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = power @ mel_filterbank(nfilt, nfft, sample_rate).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    cep = scipy.fft.dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    cep = cep * (1 + ceplifter / 2 * np.sin(np.pi * np.arange(numcep) / ceplifter))
    cep[:, 0] = np.log(energy)
    return cep


def mel_filterbank(nfilt: int, nfft: int, sample_rate: int) -> np.ndarray:
    """(nfilt, nfft // 2 + 1) triangles between mel-spaced FFT bins (python_speech_features)."""
    high_mel = 2595 * np.log10(1 + (sample_rate / 2) / 700)
    hz = 700 * (10 ** (np.linspace(0, high_mel, nfilt + 2) / 2595) - 1)
    bins = np.floor((nfft + 1) * hz / sample_rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def to_int16_levels(audio: Tensor) -> np.ndarray:
    """(L,) float in [-1, 1] -> float64 array of int16 values, as a 16-bit wav file holds them."""
    return np.clip(np.round(audio.double().cpu().numpy() * 32768), -32768, 32767)


def to_syncnet_frames(video: Tensor, size: int = SYNC_SIZE) -> Tensor:
    """(T, 3, H, W) RGB in [0, 1] -> (T, 3, size, size) BGR uint8 levels as float in [0, 255]."""
    x = (video.float().clamp(0, 1) * 255).round()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = x.round().clamp(0, 255)
    return x.flip(1)


def sync_scores(video_emb: Tensor, audio_emb: Tensor, vshift: int = 15) -> dict[str, Tensor]:
    """video_emb, audio_emb: (N, D) window embeddings -> dict with `lse_d`, `lse_c`, `offset`
    (scalars) and `mdist` (2 vshift + 1,) mean distance per shift, as syncnet_python's `calc_pdist`."""
    n = video_emb.shape[0]
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    shifted = rearrange(padded.unfold(0, 2 * vshift + 1, 1)[:n], "n d s -> n s d")  # audio i + j for shift j
    dists = F.pairwise_distance(video_emb[:, None].expand_as(shifted), shifted)  # (N, shifts), eps 1e-6
    mdist = dists.mean(0)
    minval, minidx = mdist.min(0)
    return {"lse_d": minval, "lse_c": mdist.median() - minval, "offset": vshift - minidx, "mdist": mdist}


class LSE(NetworkMetric):
    """LSE-D (lower is better) and LSE-C (higher is better) with SyncNet.

    Args:
        weights: path to `syncnet_v2.model` (missing -> `MetricUnavailable`).
        vshift: offset search range in frames (+-15 as Wav2Lip / syncnet_python `--vshift 15`).
        batch_size: windows per network call (20 as syncnet_python).

    update(videos, audio): videos (B, T, 3, H, W) RGB float in [0, 1], 25 fps face crops of any size
    (resized to 224); audio (B, L) float in [-1, 1], 16 kHz mono, aligned with the video start.
    compute(): {"lse_d", "lse_c", "offset"} float64 scalars, means over videos.
    """

    def __init__(self, weights: str | Path | None, *, vshift: int = 15, batch_size: int = 20, **kwargs):
        net = SyncNet()
        report = load_weights(net, weights, SYNCNET_WEIGHTS)
        super().__init__(net, **kwargs)
        self.weight_report, self.vshift, self.batch_size = report, vshift, batch_size
        for name in ("lse_d", "lse_c", "offset"):
            self.add_state(f"{name}_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def embed(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """One video (T, 3, H, W) and its audio (L,) -> video and audio window embeddings (N, D)."""
        device = self.net_device()
        n = min(video.shape[0], audio.shape[0] // SAMPLES_PER_FRAME) - WINDOW
        if n < 1:
            raise ValueError(f"LSE needs more than {WINDOW} frames of video and audio, got "
                             f"{video.shape[0]} frames and {audio.shape[0]} samples")
        frames = to_syncnet_frames(video[: n + WINDOW - 1]).to(device)
        mfcc = torch.from_numpy(mfcc_psf(to_int16_levels(audio))).float().T.to(device)  # (13, M)
        lips, auds = [], []
        for start in range(0, n, self.batch_size):
            idx = torch.arange(start, min(n, start + self.batch_size), device=device)
            clip = frames[idx[:, None] + torch.arange(WINDOW, device=device)]  # (n, 5, 3, H, W)
            lips.append(self.net.forward_lip(rearrange(clip, "n t c h w -> n c t h w")))
            cols = idx[:, None] * MFCC_PER_FRAME + torch.arange(WINDOW * MFCC_PER_FRAME, device=device)
            auds.append(self.net.forward_aud(rearrange(mfcc[:, cols], "k n w -> n 1 k w")))
        return torch.cat(lips), torch.cat(auds)

    def update(self, videos: Tensor, audio: Tensor) -> None:
        if videos.ndim != 5 or audio.ndim != 2 or videos.shape[0] != audio.shape[0]:
            raise ValueError(f"expected videos (B, T, 3, H, W) and audio (B, L), got {tuple(videos.shape)} "
                             f"and {tuple(audio.shape)}")
        for video, wav in zip(videos, audio):
            scores = sync_scores(*self.embed(video, wav), vshift=self.vshift)
            self._add(scores)

    def _add(self, scores: dict[str, Tensor]) -> None:
        """Add one video's `sync_scores` result."""
        for name in ("lse_d", "lse_c", "offset"):
            key = f"{name}_sum"
            setattr(self, key, getattr(self, key) + scores[name].double().to(self.n.device))
        self.n += 1

    def compute(self) -> dict[str, Tensor]:
        n = self.n.clamp(min=1).double()
        return {name: getattr(self, f"{name}_sum") / n for name in ("lse_d", "lse_c", "offset")}
