"""What each stage draws from one parsed sample (one video chunk), and how batches are collated.

Frames stay uint8 in batches (4x less to copy to the device); stages divide by 255.

- LFG:   two frames of one chunk, indices drawn uniformly with replacement and sorted
         (source = earlier), as the official LFG dataset does; optionally a fraction of the pairs
         drives with a blink frame (`LFGPair.blink_pairs`).
- PBNet: a window of `window` consecutive frames of audio features, pose and blink (the whole
         chunk if shorter; the collate pads and returns a mask).  No video is decoded.
- A2V:   a clip of L consecutive frames with every condition (and the 16 kHz waveform, for
         sample videos with sound) sliced to exactly the same frames, plus one reference frame: the clip's first frame (curriculum stage 1) or any
         frame of the chunk (stage 2; it is not part of the target).  L may change per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dawn_train.data import schema
from dawn_train.data.sample import decode_frames


def to_chw(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) -> (..., 3, H, W), still uint8."""
    return np.ascontiguousarray(np.moveaxis(frames, -1, -3))


@dataclass(frozen=True)
class LFGPair:
    """LFG pair rule: two frames of one chunk, (source, driving).

    Uniform (the official rule) when `blink_pairs` is 0.  Otherwise that fraction of pairs takes its driving frame
    among the chunk's blink frames (eye openness below `schema.BLINK_RELATIVE` x the chunk's median, the rule
    `count_blinks` uses) and its source anywhere: in a uniform draw about one pair in twenty shows a closing eye, and its few pixels
    weigh nothing in the loss.  A chunk without a blink gives a uniform pair."""

    blink_pairs: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.blink_pairs <= 1.0:
            raise ValueError(f"blink_pairs must be in [0, 1], got {self.blink_pairs}")

    def __call__(self, parsed: dict, rng: np.random.Generator, length: int | None = None) -> dict:
        n = parsed["meta"]["n_frames"]
        first, second = sorted(rng.integers(0, n, size=2))
        if self.blink_pairs > 0 and rng.random() < self.blink_pairs:
            openness = parsed[schema.BLINK][:n].mean(axis=1)
            closed = np.flatnonzero(openness < schema.BLINK_RELATIVE * np.median(openness))
            if len(closed):
                first, second = int(rng.integers(0, n)), int(rng.choice(closed))
        source, driving = decode_frames(parsed, [first, second])
        pair = {"source": to_chw(source), "driving": to_chw(driving), "key": parsed["name"]}
        for key, name in ((schema.MOUTH_LMK, "mouth_lmk"), (schema.EYE_LMK, "eye_lmk")):
            if key in parsed:  # (N, K, 2) pixels: the LFG stage may weight the mouth and the eyes in its loss
                pair[f"source_{name}"] = parsed[key][first].astype(np.float32)
                pair[f"driving_{name}"] = parsed[key][second].astype(np.float32)
        return pair


lfg_pair = LFGPair()  # the official uniform rule


def pbnet_window(parsed: dict, rng: np.random.Generator, length: int) -> dict:
    n = parsed["meta"]["n_frames"]
    start = int(rng.integers(0, n - length + 1)) if n > length else 0
    window = slice(start, start + length)
    return {
        "audio_feat": parsed[schema.AUDIO_FEAT][window].astype(np.float32),
        "pose": parsed[schema.POSE][window], "blink": parsed[schema.BLINK][window],
        "length": min(n, length), "start": start, "key": parsed["name"],
    }


class ShortSample(ValueError):
    """A sample too short for the clip asked: a sound sample (the tail chunk of a long video), skipped but not bad."""


@dataclass(frozen=True)
class A2VClip:
    """A2V clip rule: `reference` is "first" (stage 1) or "random" (stage 2)."""

    reference: str = "first"

    def __post_init__(self):
        if self.reference not in ("first", "random"):
            raise ValueError(f"reference must be 'first' or 'random', got {self.reference!r}")

    def __call__(self, parsed: dict, rng: np.random.Generator, length: int) -> dict:
        n = parsed["meta"]["n_frames"]
        if n < length:
            raise ShortSample(f"{parsed['name']}: {n} frames, shorter than the clip length {length}")
        start = int(rng.integers(0, n - length + 1))
        ref = start if self.reference == "first" else int(rng.integers(0, n))
        frames = decode_frames(parsed, [ref, *range(start, start + length)])
        clip = slice(start, start + length)
        pose, blink, box = parsed[schema.POSE], parsed[schema.BLINK], parsed[schema.FACE_BOX]
        audio = np.zeros(length * schema.SAMPLES_PER_FRAME, dtype=np.float32)  # the clip's 16 kHz waveform
        wav = parsed[schema.AUDIO][start * schema.SAMPLES_PER_FRAME:(start + length) * schema.SAMPLES_PER_FRAME]
        audio[: len(wav)] = wav
        return {
            "frames": to_chw(frames[1:]), "ref_frame": to_chw(frames[0]),
            "audio_feat": parsed[schema.AUDIO_FEAT][clip].astype(np.float32),
            "pose": pose[clip], "blink": blink[clip], "face_box": box[clip],
            "mouth_lmk": parsed[schema.MOUTH_LMK][clip], "audio": audio,
            "ref_pose": pose[ref], "ref_blink": blink[ref], "ref_face_box": box[ref],
            "ref_index": ref, "start": start, "key": parsed["name"],
        }


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch of tensors; sequences of different lengths (PBNet windows of
    short chunks) are zero-padded at the end (their `length` field says how many frames are real).  A field
    that not every sample has (an optional shard member) is left out."""
    batch: dict = {}
    for field in (f for f in samples[0] if all(f in s for s in samples)):  # an optional member some samples lack
        values = [s[field] for s in samples]
        if isinstance(values[0], str):
            batch[field] = values
        elif isinstance(values[0], (int, np.integer)):
            batch[field] = torch.tensor(values)
        elif len({v.shape for v in values}) == 1:
            batch[field] = torch.from_numpy(np.stack(values))
        else:
            lengths = [len(v) for v in values]
            padded = np.zeros((len(values), max(lengths), *values[0].shape[1:]), dtype=values[0].dtype)
            for row, value in zip(padded, values):
                row[: len(value)] = value
            batch[field] = torch.from_numpy(padded)
    return batch
