"""Audio I/O and the per-video-frame audio features (one row per frame): the built-in log-mel, and the
official HuBERT feature (`data/hubert.py`) chosen by name with :func:`audio_feature`.

The log-mel feature is the small, dependency-free stand-in for the official HuBERT feature
(1024-d, `hubert-large-ls960-ft` last layer resampled to 25 fps).  Both are (T, D) with
one row per video frame; the feature spec recorded in each shard manifest says which.
"""
from __future__ import annotations

import io
import os
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dawn_train.data.hubert import HubertFeatures
from dawn_train.data.schema import FEATURE_KINDS, FPS, SAMPLE_RATE


class AudioError(ValueError):
    """Unreadable or unusable audio; the message names the file."""


def read_wav(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Read a PCM16 WAV (path or bytes) at 16 kHz; returns mono float32 in [-1, 1], shape (L,).

    Stereo input keeps the first channel (as the official pre-processing does).
    Other sample rates go through :func:`resample` (anti-aliased, as every audio path here)."""
    name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with handle, wave.open(handle, "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"{name}: cannot read as WAV ({exc})") from exc
    if width != 2:
        raise AudioError(f"{name}: {8 * width}-bit WAV, expected 16-bit PCM")
    audio = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)[:, 0].astype(np.float32) / 32768.0
    if audio.size == 0:
        raise AudioError(f"{name}: no audio samples")
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate, SAMPLE_RATE)
    return audio


def write_wav(path_or_buffer, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio in [-1, 1], shape (L,), as PCM16 to a path (str or Path) or a binary buffer."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    if isinstance(path_or_buffer, os.PathLike):  # `wave` takes a str or a file object
        path_or_buffer = os.fspath(path_or_buffer)
    with wave.open(path_or_buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    write_wav(buffer, audio, rate)
    return buffer.getvalue()


def _resampler(rate: int):
    """FFmpeg's swresample as PyAV exposes it, to float mono at `rate`: a windowed-sinc polyphase filter
    that low-passes below the new Nyquist frequency (linear interpolation would fold 8-22 kHz content of a
    44.1 kHz file into the speech band).  The one resampler of dawn_train: file decoding (`decode_audio`:
    prep and generate) and in-memory rate changes (`resample`) both go through it."""
    import av

    return av.AudioResampler(format="flt", layout="mono", rate=rate)


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float audio (L,) at `rate_in` -> float32 (round(L * rate_out / rate_in),) at `rate_out`, anti-aliased."""
    import av

    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if rate_in == rate_out or audio.size == 0:
        return audio.copy()
    resampler, chunks = _resampler(rate_out), []
    for start in range(0, len(audio), 1 << 16):
        frame = av.AudioFrame.from_ndarray(audio[None, start:start + (1 << 16)], format="flt", layout="mono")
        frame.sample_rate = rate_in
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    out = np.concatenate(chunks)
    n_out = int(round(len(audio) * rate_out / rate_in))  # the filter's flush can leave a sample more or less
    return np.pad(out[:n_out], (0, max(0, n_out - len(out)))).astype(np.float32)


def decode_audio(path: str | Path, stream_index: int = 0) -> tuple[np.ndarray, float]:
    """The audio stream `stream_index` of any file PyAV opens (wav, mp3, m4a, mp4 ...) -> (mono float32 (L,)
    at 16 kHz with the channels averaged, start time of the stream in seconds).  Raises AudioError naming
    the file when it cannot be opened or decoded, or has no audio stream."""
    import av

    chunks = []
    try:
        with av.open(str(path)) as container:
            if len(container.streams.audio) <= stream_index:
                raise AudioError(f"{path}: has no audio stream")
            stream = container.streams.audio[stream_index]
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            resampler = _resampler(SAMPLE_RATE)
            for frame in container.decode(stream):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (AudioError, MemoryError):  # out of memory is not a broken file
        raise
    except Exception as exc:  # PyAV raises av.error.* (InvalidDataError, ...) for broken files
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    return (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)), start


def n_video_frames(n_samples: int) -> int:
    """Frames of 25-fps video covered by `n_samples` of 16 kHz audio (official: floor)."""
    return int(n_samples * FPS // SAMPLE_RATE)


def hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(freq >= min_log_hz, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, freq / f_sp)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(n_mels: int, n_fft: int, rate: int = SAMPLE_RATE, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape (n_mels, n_fft // 2 + 1) (as librosa.filters.mel)."""
    fmax = rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


@dataclass(frozen=True)
class LogMelSpec:
    """Log-mel feature with one row per video frame: frame t is centred on the middle of
    video frame t's 40 ms audio interval, so row t of the feature and frame t of the video
    describe the same moment."""

    n_mels: int = 80
    n_fft: int = 1024
    hop: int = SAMPLE_RATE // FPS
    sample_rate: int = SAMPLE_RATE
    fps: int = FPS

    @property
    def dim(self) -> int:
        return self.n_mels

    def describe(self) -> dict:
        return {"type": "logmel", "dim": self.dim, **asdict(self)}

    def compute(self, audio: np.ndarray, n_frames: int, progress=None) -> np.ndarray:
        """(n_frames, n_mels) float32 of mono 16 kHz `audio` (:func:`log_mel`; one call, so `progress` is unused)."""
        return log_mel(audio, n_frames, self)


def log_mel(audio: np.ndarray, n_frames: int, spec: LogMelSpec = LogMelSpec()) -> np.ndarray:
    """Log-mel feature of mono 16 kHz `audio` (L,) -> (n_frames, n_mels) float32.

    Audio shorter than `n_frames` video frames is zero-padded at the end."""
    need = n_frames * spec.hop
    signal = np.zeros(need, dtype=np.float32)
    signal[: min(need, len(audio))] = audio[:need]
    pad = (spec.n_fft - spec.hop) // 2
    padded = np.pad(signal, (pad, spec.n_fft - spec.hop - pad))
    stft = torch.stft(
        torch.from_numpy(padded), n_fft=spec.n_fft, hop_length=spec.hop, window=torch.hann_window(spec.n_fft),
        center=False, return_complex=True,
    )
    power = stft.abs().pow(2).numpy()[:, :n_frames]  # (n_fft/2+1, n_frames)
    mel = mel_filterbank(spec.n_mels, spec.n_fft, spec.sample_rate) @ power
    return np.log(np.maximum(mel, 1e-5)).T.astype(np.float32)


def audio_feature(kind: str = "logmel", hubert_dir: str | Path | None = None, **hubert_options):
    """The feature named `kind`: a :class:`LogMelSpec`, or :class:`HubertFeatures` loaded from `hubert_dir`
    (`hubert_options`: window_frames, batch_size, device).  Both have `dim`, `describe()` (the spec that
    manifests and checkpoints record) and `compute(audio, n_frames, progress=None)` -> (n_frames, dim)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown audio feature {kind!r}; choose one of {', '.join(FEATURE_KINDS)}")
    if kind == "logmel":
        if hubert_dir is not None:
            raise ValueError("a HuBERT model directory is only used with the hubert feature (--features hubert)")
        return LogMelSpec()
    if hubert_dir is None:
        raise ValueError("the hubert feature needs a local model directory (--hubert-dir DIR, e.g. a copy of "
                         "facebook/hubert-large-ls960-ft)")
    return HubertFeatures(hubert_dir, **hubert_options)
