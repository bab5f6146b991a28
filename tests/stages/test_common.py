"""dawn_train.stages.common: each rank of a multi-process run draws its own random numbers, reproducibly."""
from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dawn_train.stages.a2v import A2VStage
from dawn_train.stages.common import DawnStage, rank_seed
from dawn_train.stages.lfg import LFGStage
from dawn_train.stages.pbnet import PBNetStage


class DrawRecorder(DawnStage):
    """Writes what it draws each step (as a stage draws timesteps and noise) to `<out>/rank<r>-step<s>.json`."""

    def __init__(self, out: str):
        super().__init__()
        self.layer, self.out = nn.Linear(2, 1), out

    def training_step(self, batch, batch_idx):
        draws = {"timesteps": torch.randint(0, 1000, (4,)).tolist(), "noise": torch.randn(3).tolist()}
        Path(self.out, f"rank{self.global_rank}-step{self.global_step}.json").write_text(json.dumps(draws))
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=2)


def run_two_ranks(out: Path) -> dict:
    out.mkdir()
    environ = dict(os.environ)  # Lightning writes MASTER_PORT/ADDR and PL_GLOBAL_SEED into this process's environment
    try:
        L.seed_everything(7)
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(DrawRecorder(str(out)))
    finally:  # later tests' subprocesses would inherit them (a fixed, stale port)
        os.environ.clear()
        os.environ.update(environ)
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.mark.slow  # two spawned processes, twice
def test_two_processes_draw_differently_and_a_rerun_draws_the_same(tmp_path):
    first = run_two_ranks(tmp_path / "a")
    assert set(first) == {"rank0-step0", "rank0-step1", "rank1-step0", "rank1-step1"}
    for step in (0, 1):
        assert first[f"rank0-step{step}"] != first[f"rank1-step{step}"], "ranks drew the same timesteps/noise"
    assert run_two_ranks(tmp_path / "b") == first  # same seed and world size: same draws


def test_seed_depends_on_rank_and_resume_step():
    seeds = {rank_seed(7, rank, step) for rank in (0, 1, 2) for step in (0, 100)}
    assert len(seeds) == 6
    assert rank_seed(7, 1, 100) == 1674067987  # the same in every process and version: a resume redraws alike


def test_every_stage_reseeds_per_rank():
    assert all(issubclass(stage, DawnStage) for stage in (LFGStage, PBNetStage, A2VStage))
