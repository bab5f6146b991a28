"""Fixtures shared by the inference tests."""
from pathlib import Path

import pytest
import torch

from dawn_train import checkpoints
from tests.stages.test_a2v import TINY_A2V, make_tiny_lfg


@pytest.fixture(scope="module")
def models(synth_raw, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny LFG (a few training steps) and a tiny A2V-FDM in the converted format (a module may define its own)."""
    work = tmp_path_factory.mktemp("models")
    lfg = make_tiny_lfg(synth_raw, work / "lfg.pt")
    torch.manual_seed(0)
    config = {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": {**TINY_A2V, "dim_mults": [1, 2]}}
    a2v = checkpoints.save_converted(checkpoints.build(config), config, "a2v", work / "a2v.pt")
    return lfg, a2v
