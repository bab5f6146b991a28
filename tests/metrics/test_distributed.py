"""Metric states sum across ranks: 2 gloo processes give the single-process value."""
import datetime

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dawn_train.metrics.bas import BAS
from dawn_train.metrics.blink import BlinkRate
from dawn_train.metrics.frechet import FrechetMetric

N_BATCHES = 4


def make_batches():
    """Deterministic inputs: per batch (features real, features fake, openness, beats)."""
    rng = np.random.default_rng(0)
    batches = []
    for i in range(N_BATCHES):
        real = torch.tensor(rng.normal(size=(6 + i, 4)))
        fake = torch.tensor(rng.normal(size=(5, 4)) + 0.3)
        openness = np.full((2, 100 + 10 * i), 0.3)
        openness[:, 20:23 + i] = 0.05
        openness[1, 60:64] = 0.05
        beats = [(rng.integers(0, 100, 4), rng.integers(0, 100, 3)) for _ in range(2)]
        batches.append((real, fake, torch.tensor(openness), beats))
    return batches


def run_metrics(batches):
    metrics = {"frechet": FrechetMetric(nn.Identity(), num_features=4), "blink": BlinkRate(), "bas": BAS()}
    for real, fake, openness, beats in batches:
        metrics["frechet"].update(real, real=True)
        metrics["frechet"].update(fake, real=False)
        metrics["blink"].update(openness)
        metrics["bas"].update(beats=beats)
    return {name: metric.compute() for name, metric in metrics.items()}


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    # a file store in the test's own folder: no port to race other test processes for (a FileStore, not a file://
    # URL, which a '#' or '?' in the temporary path would cut short)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = run_metrics(make_batches()[rank::world])  # each rank sees half the batches
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_processes_equal_single_process(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    distributed = torch.load(out)
    single = run_metrics(make_batches())
    half = run_metrics(make_batches()[0::2])
    assert float(half["frechet"]) != pytest.approx(float(single["frechet"]))  # so the test can fail
    for name, value in single.items():
        assert float(distributed[name]) == pytest.approx(float(value), rel=1e-9), name
