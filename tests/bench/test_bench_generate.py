"""`dawn-train bench generate` (and progress in `bench sample`): figures and output, never wall-clock assertions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dawn_train.bench.generate import (
    DEMO_A2V,
    DEMO_LFG,
    DEMO_PBNET,
    DEMO_PBNET_UNITS,
    TABLE_COLUMNS,
    generate_command,
    table_rows,
)
from dawn_train.bench.sample import bench_sample
from dawn_train.cli import main
from dawn_train.models.a2v.conditioning import window_spans

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def demo_model(name: str) -> dict:
    return yaml.safe_load((REPO / "experiments" / "demo" / name).read_text())["model"]["init_args"]


def test_random_models_have_the_demo_architecture():
    assert demo_model("lfg.yaml")["model"] == DEMO_LFG
    pbnet = demo_model("pbnet.yaml")
    assert {**pbnet["model"]["init_args"], "audio_dim": 80} == DEMO_PBNET  # audio_dim comes from the manifest
    assert {k: pbnet[k] for k in DEMO_PBNET_UNITS} == DEMO_PBNET_UNITS
    a2v = demo_model("a2v_stage1.yaml")["model"]["init_args"]  # cond_aud comes from the manifest
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in a2v.items()} | {"cond_aud": 80} == DEMO_A2V


def test_modes_map_to_generate_flags(tmp_path):
    case = {"seconds": 10.0, "mode": "windows", "models": {"lfg": "l.pt", "a2v": "a.pt", "pbnet_pose": "p.pt",
                                                            "pbnet_blink": "b.pt"}, "work": str(tmp_path),
            "chunk_seconds": 10.0, "chunk_overlap": 2.0, "steps": 1, "budget_gib": 4.0, "decode_chunk": 32}
    args = generate_command(case)
    assert args[1:4] == ["-m", "dawn_train.cli", "generate"] and "--json" in args and "--quiet" in args
    assert args[args.index("--chunk-seconds") + 1] == "10.0" and args[args.index("--memory-budget") + 1] == "4.0"
    assert "--no-pbnet-banded" not in args
    dense = generate_command({**case, "mode": "dense"})
    assert "--no-pbnet-banded" in dense and "--chunk-seconds" not in dense


def test_table_shows_measured_refused_and_failed_cases():
    mib = 2 ** 20
    result = {"cases": [
        {"seconds": 60.0, "mode": "windows", "frames": 1500, "wall_seconds": 30.0, "rss_peak_bytes": 900 * mib,
         "measured_bytes": 300 * mib, "memory_estimate_bytes": 330 * mib},
        {"seconds": 600.0, "mode": "dense", "frames": 15000, "refused": "...", "estimate_bytes": 16 * 1024 * mib,
         "budget_bytes": 9 * 1024 * mib},
        {"seconds": 600.0, "mode": "whole", "error": "exit 1: Traceback\nMemoryError"}]}
    rows = table_rows(result)
    assert all(len(row) == len(TABLE_COLUMNS) for row in rows)
    assert rows[0] == ["60", "1500", "windows", "0.50", "900", "300", "330", "1.10"]
    assert rows[1][3] == "refused" and rows[1][6] == "16,384" and "9,216" in rows[1][7]
    assert rows[2][3] == "error" and "MemoryError" in rows[2][7]


@pytest.mark.slow
def test_cli_runs_cases_in_fresh_processes(capsys):
    """4 s of audio with a 0.15 GiB budget: windows of 0.4 s are measured, one pass is refused with its estimate
    (two child processes, ~10 s each)."""
    assert main(["bench", "generate", "--seconds", "4", "--modes", "windows,whole", "--steps", "1",
                 "--chunk-seconds", "0.4", "--chunk-overlap", "0.1", "--memory-budget", "0.15", "--quiet",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    windows, whole = result["cases"]
    assert windows["mode"] == "windows" and windows["frames"] == 100
    assert windows["windows"] == len(window_spans(100, 10, 2))
    assert windows["rss_peak_bytes"] > windows["rss_before_bytes"] > 0 and windows["memory_estimate_bytes"] > 0
    assert windows["measured_bytes"] == windows["rss_peak_bytes"] - windows["rss_before_bytes"]
    assert whole["mode"] == "whole" and "refused" in whole and whole["estimate_bytes"] > 0.15 * 2 ** 30
    rows = table_rows(result)
    assert rows[0][2] == "windows" and rows[1][3] == "refused"


def test_sample_bench_shows_progress(capsys):
    bench_sample(frames=4, window=2, steps=2, device="cpu", progress=True)
    err = capsys.readouterr().err
    assert "banded attention, 4 frames" in err and "full attention, 4 frames" in err
