"""The official DAWN audio feature: the last hidden state of HuBERT (`hubert-large-ls960-ft`, 1024-d), one
row per video frame, computed from a local model directory with transformers (nothing is downloaded).

The recipe of the official code (`hubert_extract/data_gen/process_lrs3/process_audio_hubert_interpolate.py`,
spec section 1.2):

1. 16 kHz mono audio through the model's Wav2Vec2 feature extractor (for hubert-large-ls960-ft: zero mean, unit
   variance over the whole clip);
2. the conv front end acts as one conv of kernel 400 and stride 320 samples (50 rows per second).  Long audio
   goes through the model in windows of `window_frames` rows (official: 1000 = 20 s): window k starts at
   320 * window_frames * k and is 80 samples (kernel - stride) longer than its step, so consecutive windows
   tile the conv's receptive field and their rows join without a gap or a repeat.  The audio after the last
   whole window is one more call, dropped when shorter than one kernel.  The rows are then cut or zero-padded
   to floor((L - 80) / 320), as the official code does;
3. the 50 Hz rows are resampled to the N video frames by linear interpolation at linspace(0, T - 1, N): the
   first and last rows land on the first and last frames.

The windows of one audio have one length, so they go through the model in batches (`batch_size` windows per
call), on the GPU when there is one.  Each window's transformer sees only that window, as when the official
features were made, so rows near a window boundary differ a little from one pass over the whole audio (the
conv rows themselves are identical); `tests/data/test_hubert.py` measures how much.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from dawn_train.data.schema import FPS, SAMPLE_RATE
from dawn_train.log import get_logger

log = get_logger(__name__)
KERNEL, STRIDE = 400, 320  # receptive field and hop of HuBERT's conv front end, in samples
OFFICIAL_WINDOW_FRAMES = 1000  # rows per model call in the official code (20 s)
# The files that decide what the features are; others (README, .git, tokenizer files) do not enter the hash.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin")
INSTALL = "pip install 'dawn-train[hubert]'"


class HubertExtraMissing(ValueError):
    """transformers (the `hubert` extra) is not installed: one line naming the install command (a ValueError, so
    the CLI prints it and exits 1)."""


def check_model_dir(model_dir: str | Path) -> Path:
    """`model_dir` as a Path when it holds a HuBERT config; otherwise FileNotFoundError / ValueError naming it."""
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such HuBERT model directory (give a local copy of e.g. "
                                "facebook/hubert-large-ls960-ft: config.json + model.safetensors; nothing is downloaded)")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: missing; {path} is not a transformers model directory")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "hubert":
        raise ValueError(f"{config}: model_type is {model_type!r}, expected 'hubert'")
    return path


def model_sha1(path: Path) -> str:
    """sha1 over the names and bytes of the config and weight files of a model directory (~1 s per GB)."""
    digest = hashlib.sha1()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES
                   and not p.name.startswith("."))
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def hubert_windows(n_samples: int, window_frames: int = OFFICIAL_WINDOW_FRAMES) -> list[tuple[int, int]]:
    """The [start, stop) sample spans of the model calls over `n_samples` (>= KERNEL) of audio: whole windows
    of `window_frames` rows plus the 80-sample overlap, then the rest when it holds at least one kernel."""
    step = STRIDE * window_frames
    whole = n_samples // step
    spans = [(k * step, min(k * step + step + KERNEL - STRIDE, n_samples)) for k in range(whole)]
    if n_samples - whole * step >= KERNEL or not spans:
        spans.append((whole * step, n_samples))
    return spans


def same_length_batches(spans: list[tuple[int, int]], batch_size: int) -> list[list[tuple[int, int]]]:
    """Consecutive spans grouped into batches of at most `batch_size` spans of one length (no padding needed)."""
    batches: list[list[tuple[int, int]]] = []
    for span in spans:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and last[0][1] - last[0][0] == span[1] - span[0]:
            last.append(span)
        else:
            batches.append([span])
    return batches


def to_video_rate(rows: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(T, D) rows at 50 Hz -> (n_frames, D), linear interpolation at linspace(0, T - 1, n_frames)."""
    positions = torch.linspace(0, rows.shape[0] - 1, n_frames, dtype=torch.float64)
    lower = positions.floor().long()
    upper = (lower + 1).clamp(max=rows.shape[0] - 1)
    weight = (positions - lower).to(rows.dtype)[:, None]
    return rows[lower] * (1 - weight) + rows[upper] * weight


class HubertFeatures:
    """A HuBERT model loaded from `model_dir`, computing the per-frame feature of 16 kHz audio.

    Args:
        model_dir: local transformers directory (config.json, model.safetensors or pytorch_model.bin, and the
            feature extractor's preprocessor_config.json), e.g. a copy of facebook/hubert-large-ls960-ft.
        window_frames: 50-Hz rows per model call (official 1000 = 20 s of audio).
        batch_size: windows per model call (hubert-large: ~0.45 GiB of working memory per 20-s window, measured
            on CPU); default 4 on a GPU, 1 on the CPU, where a batch is no faster than its windows one by one.
        device: torch device (default: cuda when available, else cpu).
    """

    def __init__(self, model_dir: str | Path, *, window_frames: int = OFFICIAL_WINDOW_FRAMES,
                 batch_size: Optional[int] = None, device: Optional[str | torch.device] = None) -> None:
        self.path = check_model_dir(model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        if window_frames < 1 or batch_size < 1:
            raise ValueError(f"window_frames ({window_frames}) and batch_size ({batch_size}) must be >= 1")
        self.window_frames, self.batch_size = int(window_frames), int(batch_size)
        # huggingface_hub reads this when imported: a path that is not there never turns into a hub look-up
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import HubertModel, Wav2Vec2FeatureExtractor
        except ImportError as exc:
            raise HubertExtraMissing(f"HuBERT features need transformers ({exc}): {INSTALL}") from exc

        try:
            model, info = HubertModel.from_pretrained(str(self.path), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot load a HubertModel ({exc})") from exc
        if info["missing_keys"] or info["mismatched_keys"]:  # never compute features with random weights in silence
            raise ValueError(f"{self.path}: the weights do not fit the HubertModel of its config.json: missing "
                             f"{sorted(info['missing_keys'])}, mismatched {sorted(info['mismatched_keys'])}")
        self.model = model.eval().to(self.device)
        if (self.path / "preprocessor_config.json").is_file():
            self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(self.path), local_files_only=True)
        else:
            log.warning("%s: no preprocessor_config.json; normalising the audio as hubert-large-ls960-ft does "
                        "(zero mean, unit variance)", self.path)
            self.extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
        self.sha1 = model_sha1(self.path)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def describe(self) -> dict:
        """The feature spec recorded in shard manifests and checkpoints (what makes two features the same)."""
        return {"type": "hubert", "dim": self.dim, "model": self.path.resolve().name, "model_sha1": self.sha1,
                "layer": "last", "window_frames": self.window_frames,
                "normalize": bool(self.extractor.do_normalize), "sample_rate": SAMPLE_RATE, "fps": FPS}

    @torch.no_grad()
    def hidden_rows(self, audio: np.ndarray, progress: Optional[Callable[[int], object]] = None) -> torch.Tensor:
        """Mono 16 kHz `audio` (L,) -> (floor((L - 80) / 320), D) float32 last hidden states at 50 Hz, on the CPU
        (at least one row: audio shorter than one kernel is zero-padded to it).  `progress(n)` after each model
        call with the rows it made."""
        values = self.extractor(np.asarray(audio, dtype=np.float32), sampling_rate=SAMPLE_RATE,
                                return_tensors="np").input_values[0].astype(np.float32)
        if len(values) < KERNEL:
            values = np.pad(values, (0, KERNEL - len(values)))
        parts = []
        for batch in same_length_batches(hubert_windows(len(values), self.window_frames), self.batch_size):
            inputs = torch.from_numpy(np.stack([values[start:stop] for start, stop in batch])).to(self.device)
            hidden = self.model(inputs).last_hidden_state.float().cpu()  # (windows, rows, D)
            parts.extend(hidden)
            if progress is not None:
                progress(hidden.shape[0] * hidden.shape[1])
        rows = torch.cat(parts)
        expected = max(1, (len(values) - (KERNEL - STRIDE)) // STRIDE)
        if len(rows) < expected:  # the official fix of a +-1 row difference: zero rows at the end
            rows = torch.cat([rows, rows.new_zeros(expected - len(rows), rows.shape[1])])
        return rows[:expected]

    def compute(self, audio: np.ndarray, n_frames: int,
                progress: Optional[Callable[[int], object]] = None) -> np.ndarray:
        """Mono 16 kHz `audio` (L,) -> (n_frames, D) float32, one row per video frame.  `progress(n)` after each
        model call with the share of the `n_frames` it covered."""
        total_rows, done = max(1, (len(audio) - (KERNEL - STRIDE)) // STRIDE), [0, 0]  # rows, frames reported

        def report(rows: int) -> None:
            done[0] += rows
            frames = min(n_frames, done[0] * n_frames // total_rows)
            progress(frames - done[1])
            done[1] = frames

        rows = self.hidden_rows(audio, report if progress is not None else None)
        if progress is not None and done[1] < n_frames:
            progress(n_frames - done[1])
        return to_video_rate(rows, n_frames).numpy()
