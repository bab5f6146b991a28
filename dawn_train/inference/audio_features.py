"""The per-frame audio feature of a generation: the one the A2V checkpoint was trained with, computed from the
16 kHz audio in bounded memory (the log-mel in chunks, HuBERT in windows: `data/hubert.py`).

Which feature: the one the checkpoint records (the shard manifest's spec, saved by the A2V stage); a checkpoint
that records none (a converted official release file) takes the feature its input size implies: 80-d log-mel,
1024-d HuBERT.  `--features` may name it, and must then agree with the checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from dawn_train.data.audio import LogMelSpec, log_mel
from dawn_train.data.hubert import KERNEL, OFFICIAL_WINDOW_FRAMES, STRIDE, HubertFeatures
from dawn_train.data.schema import FEATURE_KINDS
from dawn_train.inference.memory import FEATURE_CHUNK_FRAMES, live_tensor_peak
from dawn_train.log import get_logger

log = get_logger(__name__)
HUBERT_LARGE_DIM = 1024  # the official feature's size (hubert-large-ls960-ft)


def log_mel_chunked(audio: np.ndarray, n_frames: int, spec: LogMelSpec = LogMelSpec(),
                    chunk: int = FEATURE_CHUNK_FRAMES,
                    progress: Optional[Callable[[int], object]] = None) -> np.ndarray:
    """`data.audio.log_mel` computed `chunk` frames at a time (the STFT of ten minutes would hold ~140 MiB):
    each call gets its frames' audio plus one frame of context on each side (zeros beyond the audio, as
    `log_mel` pads) and drops the two edge rows, so the rows equal those of one call up to FFT rounding.
    `progress(n)` is called after every chunk with its frame count."""
    hop, rows = spec.hop, []
    usable = min(len(audio), n_frames * hop)
    for first in range(0, n_frames, max(1, int(chunk))):
        last = min(n_frames, first + chunk)
        begin, end = (first - 1) * hop, (last + 1) * hop
        segment = np.zeros(end - begin, dtype=np.float32)
        lo, hi = max(begin, 0), min(end, usable)
        if hi > lo:
            segment[lo - begin:hi - begin] = audio[lo:hi]
        rows.append(log_mel(segment, last - first + 2, spec)[1:-1])
        if progress is not None:
            progress(last - first)
    return np.concatenate(rows)


def feature_kind(requested: Optional[str], recorded: Optional[dict], dim: int) -> str:
    """"logmel" or "hubert": what the checkpoint records, else what its audio size `dim` implies; `requested`
    (--features) must agree with it."""
    kind = (recorded or {}).get("type")
    if kind is None:
        kind = "logmel" if dim == LogMelSpec().dim else "hubert" if dim == HUBERT_LARGE_DIM else None
    if requested is not None:
        if requested not in FEATURE_KINDS:
            raise ValueError(f"--features {requested}: choose one of {', '.join(FEATURE_KINDS)}")
        if kind is not None and requested != kind:
            raise ValueError(f"--features {requested}, but the A2V checkpoint was trained on {kind} features "
                             f"({dim}-d): leave --features out or give {kind}")
        kind = requested
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown audio feature {recorded!r} for a {dim}-d model; pass --audio-feat-from FEATS.npy")
    return kind


def no_hubert_dir(dim: int) -> ValueError:
    return ValueError(f"this A2V checkpoint takes HuBERT features ({dim}-d): give --hubert-dir DIR (a local copy of "
                      "facebook/hubert-large-ls960-ft) or precomputed features with --audio-feat-from FEATS.npy")


def open_hubert(hubert_dir: Optional[str | Path], recorded: Optional[dict], dim: int,
                device: torch.device | str) -> HubertFeatures:
    """The HuBERT model of `hubert_dir`, windowed as the checkpoint's training shards were (their recorded
    `window_frames`, else the official 20 s).  Its size must be `dim`; a model other than the one the shards
    were made with (another sha1) is allowed with a warning (the official features came from a TensorFlow copy
    of the same weights, for instance)."""
    if hubert_dir is None:
        raise no_hubert_dir(dim)
    recorded = recorded or {}
    hubert = HubertFeatures(hubert_dir, window_frames=int(recorded.get("window_frames") or OFFICIAL_WINDOW_FRAMES), device=device)
    if hubert.dim != dim:
        raise ValueError(f"{hubert_dir}: its HuBERT features are {hubert.dim}-d, the A2V checkpoint takes {dim}-d")
    if recorded.get("model_sha1") not in (None, hubert.sha1):
        log.warning("%s is not the HuBERT model the training shards were made with (%s, sha1 %s); its features may "
                    "differ", hubert_dir, recorded.get("model"), recorded.get("model_sha1"))
    return hubert


def hubert_call_bytes(hubert: HubertFeatures) -> int:
    """Live tensor bytes of one model call of `hubert` (a batch of whole windows), traced on the meta device."""
    window_samples = STRIDE * hubert.window_frames + KERNEL - STRIDE
    return live_tensor_peak(hubert.model, "forward", (hubert.batch_size, window_samples))


def audio_features(audio: np.ndarray, n_frames: int, feature: Optional[dict], dim: int,
                   progress: Optional[Callable[[int], object]] = None, *, kind: Optional[str] = None,
                   hubert: Optional[HubertFeatures] = None) -> np.ndarray:
    """The per-frame feature the A2V model was trained with: (n_frames, dim) float32, rounded through float16
    as the shards store it.  `feature`: the spec the checkpoint records (None: implied by `dim`); `kind`:
    --features; `hubert`: the loaded model (:func:`open_hubert`) when the feature is HuBERT.  `progress(n)`
    after each chunk or model call, with its frame count."""
    kind = feature_kind(kind, feature, dim)
    if kind == "logmel":
        fields = {k: v for k, v in (feature or {}).items() if k in LogMelSpec.__dataclass_fields__}
        spec = LogMelSpec(**fields)
        if spec.dim != dim:
            raise ValueError(f"the checkpoint's log-mel feature is {spec.dim}-d but the model expects {dim}")
        feat = log_mel_chunked(audio, n_frames, spec, progress=progress)
    elif hubert is None:
        raise no_hubert_dir(dim)
    else:
        feat = hubert.compute(audio, n_frames, progress)
    return feat.astype(np.float16).astype(np.float32)
