"""Shared pytest fixtures: where the reference data lives, and small helpers."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`shared/` with the reference facts and parity fixtures: $DAWN_SHARED, else beside the repo."""
    return Path(os.environ.get("DAWN_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    path = shared_dir() / "reference" / "parity"
    if not path.is_dir():
        pytest.skip(f"parity fixtures not found at {path} (set DAWN_SHARED)")
    return path


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    path = shared_dir() / "reference" / "official_state_dict_shapes.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (set DAWN_SHARED)")
    return json.loads(path.read_text())


def load_fixture(parity_dir: Path, name: str) -> tuple[dict, dict]:
    """Return (tensors, sidecar json) of a parity fixture such as ``lfg_small``."""
    from safetensors.torch import load_file

    return load_file(str(parity_dir / f"{name}.safetensors")), json.loads((parity_dir / f"{name}.json").read_text())
