"""A small synthetic dataset with shards, built once per test session (64 px, 2 s videos)."""
from __future__ import annotations

import pytest

from dawn_train.data.shards import write_shards
from dawn_train.data.synth import synth_dataset


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "raw"
    synth_dataset(out, videos=8, seconds=2.0, size=64, seed=3, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_shards(synth_raw):
    out = synth_raw.parent / "shards"
    write_shards(synth_raw, out, val_fraction=0.25, samples_per_shard=1, progress=False)
    return out
