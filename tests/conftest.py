"""Shared pytest fixtures: where the reference data lives, and small helpers."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """The disk memo of memory traces is off (`tests/inference/test_meta_trace.py` turns it on in a temporary
    folder): every test, and every process it starts, traces what it estimates.  Under pytest-xdist (`make test`
    runs a worker per CPU), each worker and the processes its tests start get their share of the CPUs: torch's
    default of one thread per CPU in every worker oversubscribes them."""
    os.environ["DAWN_TRAIN_CACHE"] = "off"
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        # `make test` passes what scripts/cpus.sh counts (a container's CPU quota included)
        cpus = int(os.environ.get("DAWN_TEST_CPUS") or 0) or (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        threads = max(1, cpus // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(autouse=True)
def seeded_random_state():
    """Every test starts from the same random state (torch, numpy, random: seed 0), whichever tests ran before it in
    its process: under xdist a worker's earlier files vary from run to run, and with them unseeded draws.  (Module-
    and session-scoped fixtures are set up before it: those that draw seed themselves.)"""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def shared_dir() -> Path:
    """`shared/` with the reference facts and parity fixtures: $DAWN_SHARED, else beside the repo."""
    return Path(os.environ.get("DAWN_SHARED", REPO.parent / "shared")).resolve()


def in_ci() -> bool:
    """True under CI (`CI=true`, as GitHub Actions, GitLab and most CI services set it; 1 and yes count too)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_unless_ci(reason: str, allow_module_level: bool = False) -> NoReturn:
    """Skip the test (or, `allow_module_level`, the whole module when called at its top) locally; under CI fail
    it instead, so that CI never goes green by skipping."""
    if in_ci():
        pytest.fail(f"{reason} (CI={os.environ['CI']}: this must not skip in CI)", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


PREP_EXTRA = "the prep extra: pip install 'dawn-train[prep]'"


def require_module(name: str, install: str = PREP_EXTRA):
    """`pytest.importorskip` that never skips in CI: import `name`, or skip the test (or the module, at its top)
    locally and fail it under CI=true."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        skip_unless_ci(f"{name} is not installed ({install})", allow_module_level=True)


def missing_reference(path: Path) -> NoReturn:
    skip_unless_ci(f"{path} not found: set DAWN_SHARED to the shared/ directory that holds reference/ "
                   f"(now {shared_dir()})")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    path = shared_dir() / "reference" / "parity"
    if not path.is_dir():
        missing_reference(path)
    return path


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    path = shared_dir() / "reference" / "official_state_dict_shapes.json"
    if not path.is_file():
        missing_reference(path)
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one intra-op thread: tiny models spend more time synchronising
    threads than computing (20-50x slower with 2 threads on a loaded 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_fixture(parity_dir: Path, name: str) -> tuple[dict, dict]:
    """Return (tensors, sidecar json) of a parity fixture such as ``lfg_small``."""
    from safetensors.torch import load_file

    return load_file(str(parity_dir / f"{name}.safetensors")), json.loads((parity_dir / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory):
    """8 synthetic videos, 64 px, 2 s, in the prepared-video layout (built once per session)."""
    from dawn_train.data.synth import synth_dataset

    out = tmp_path_factory.mktemp("synth") / "raw"
    synth_dataset(out, videos=8, seconds=2.0, size=64, seed=3, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_shards(synth_raw):
    """Shards of `synth_raw`: 6 train shards, 2 val shards, one sample each."""
    from dawn_train.data.shards import write_shards

    out = synth_raw.parent / "shards"
    write_shards(synth_raw, out, val_fraction=0.25, samples_per_shard=1, progress=False)
    return out


TINY_HUBERT_DIM = 32


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory) -> Path:
    """A model directory laid out as facebook/hubert-large-ls960-ft is (a HubertForCTC checkpoint, its config and
    the Wav2Vec2 feature extractor's preprocessor_config.json), of a randomly initialised 32-d, 2-layer HuBERT
    with the large model's conv front end (kernel 400, stride 320) and layer norms: the real loading code runs
    on it, offline.  Directory name with a dot and a space, as users' paths have."""
    import torch
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2FeatureExtractor

    path = tmp_path_factory.mktemp("hubert") / "hubert tiny.v1"
    config = HubertConfig(hidden_size=TINY_HUBERT_DIM, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                          vocab_size=32)
    torch.manual_seed(0)
    HubertForCTC(config).save_pretrained(str(path))
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(str(path))
    return path
