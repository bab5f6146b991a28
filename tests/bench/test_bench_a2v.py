"""`dawn-train bench attention|sample`: correct figures and output (never wall-clock assertions)."""
from __future__ import annotations

import json

import pytest
import torch

from dawn_train.bench.attention import bench_attention, measure
from dawn_train.bench.sample import bench_sample
from dawn_train.cli import main

KEYS = {"ours_ms", "full_ms", "time_ratio_full_over_ours", "ours_peak_mib", "full_peak_mib", "mem_ratio_full_over_ours"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is faster


def test_attention_bench_compares_equal_outputs():
    result = bench_attention(frames=40, window=10, positions=4, heads=2, dim_head=8, repeats=1, device="cpu")
    assert KEYS <= set(result) and result["half_width"] == 5
    assert result["max_abs_diff"] < 1e-5  # banded == masked full attention
    assert result["ours_ms"] > 0 and result["full_ms"] > 0


def test_peak_memory_sees_a_large_allocation():
    result = measure(lambda: torch.ones(64, 2 ** 20).sum(), torch.device("cpu"), repeats=1)  # 256 MiB
    assert result["peak_bytes"] > 200 * 2 ** 20


def test_sample_bench_demo_preset():
    result = bench_sample(frames=6, window=2, steps=1, device="cpu")
    assert KEYS <= set(result) and result["preset"] == "demo" and result["latent"] == 16
    with pytest.raises(ValueError, match="unknown preset"):
        bench_sample(preset="huge")


def test_cli_prints_json(capsys):
    assert main(["bench", "attention", "--frames", "24", "--window", "8", "--positions", "2", "--heads", "2",
                 "--dim-head", "8", "--repeats", "1", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 24 and result["window"] == 8 and KEYS <= set(result)
    assert main(["bench", "sample", "--frames", "4", "--window", "2", "--steps", "1", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
