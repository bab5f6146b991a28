"""What the LFG draws from a chunk: uniform pairs (the official rule) or pairs driven by a blink frame."""
import numpy as np
import pytest

from dawn_train.data import schema
from dawn_train.data.clips import LFGPair
from dawn_train.data.sample import decode_frames, parse_sample
from tests.data.conftest import raw_samples


def parsed_samples(shards) -> list[dict]:
    """Every training sample of the shards, parsed with the LFG's keys."""
    return [parse_sample(raw, schema.STAGE_KEYS["lfg"]) for path in sorted(shards.glob("train-*.tar"))
            for raw in raw_samples(path)]


def driving_indices(rule: LFGPair, parsed: dict, draws: int, seed: int = 0) -> list[int]:
    """The frame index of each drawn pair's driving frame, found by comparing with every decoded frame."""
    frames = decode_frames(parsed, range(parsed["meta"]["n_frames"]))
    rng, found = np.random.default_rng(seed), []
    for _ in range(draws):
        driving = np.moveaxis(rule(parsed, rng)["driving"], 0, -1)
        found.append(int(np.flatnonzero((frames == driving).all(axis=(1, 2, 3)))[0]))
    return found


def blink_frames(parsed: dict) -> set[int]:
    openness = parsed[schema.BLINK].mean(axis=1)
    return set(np.flatnonzero(openness < schema.BLINK_RELATIVE * np.median(openness)).tolist())


def test_blink_pairs_drive_with_blink_frames_and_zero_is_uniform(synth_shards):
    parsed = next(p for p in parsed_samples(synth_shards) if blink_frames(p))
    blinks, n = blink_frames(parsed), parsed["meta"]["n_frames"]
    assert len(blinks) < n / 4  # a blink is a few frames of the chunk
    assert set(driving_indices(LFGPair(1.0), parsed, 12)) <= blinks
    uniform = driving_indices(LFGPair(0.0), parsed, 40)
    assert sum(i in blinks for i in uniform) < 20 and len(set(uniform)) > 15
    half = driving_indices(LFGPair(0.5), parsed, 40, seed=1)
    assert 8 <= sum(i in blinks for i in half) <= 32


def test_a_chunk_without_blinks_gives_uniform_pairs(synth_shards):
    parsed = parsed_samples(synth_shards)[0]
    parsed[schema.BLINK] = np.full_like(parsed[schema.BLINK], 0.3)  # eyes open throughout
    assert len(set(driving_indices(LFGPair(1.0), parsed, 20))) > 5


def test_blink_pairs_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError, match="blink_pairs must be in"):
        LFGPair(1.5)


def test_lfg_datamodule_draws_blink_pairs_for_training_only(synth_shards):
    from dawn_train.data.datamodule import LFGDataModule

    data = LFGDataModule(str(synth_shards), blink_pairs=0.4)
    assert data.draw(train=True) == LFGPair(0.4) and data.draw(train=False) == LFGPair(0.0)
    with pytest.raises(ValueError, match="blink_pairs"):
        LFGDataModule(str(synth_shards), blink_pairs=-0.1)
