"""`dawn-train bench prep`: the 720p input is made and prepared, and the reported figures agree with the frame
count and with time measured here, around the command, independently of the bench."""
from __future__ import annotations

import json
import os
import time

import pytest

from dawn_train.cli import main
from tests.conftest import require_module

require_module("mediapipe")


@pytest.mark.slow  # 720p encode + decodes: ~15-25 s on 2 loaded cores
def test_bench_prep_reports_rates_per_core_from_measured_cpu_time(capsys):
    wall, cpu = time.perf_counter(), time.process_time()
    assert main(["bench", "prep", "--seconds", "1", "--videos", "1", "--size", "64", "--json"]) == 0
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = json.loads(capsys.readouterr().out)
    assert result["frames_per_video"] == 25 and result["videos"] == 1 and result["input"].startswith("1280x720")
    # the prepared video's times are a part of the command's (which also made and decoded the input)
    assert 0 < result["wall_seconds"] < wall and 0 < result["cpu_seconds"] < cpu
    # no more CPU than the cores could give in that wall time, and a process that worked (not idle)
    cores = os.cpu_count()
    assert result["cpu_count"] == cores and 0.05 < result["cores_used"] <= cores
    # (rounded to 2 decimals, so an absolute tolerance: a starved process uses under 0.25 cores)
    assert result["cores_used"] == pytest.approx(result["cpu_seconds"] / result["wall_seconds"], abs=0.006)
    # rates = frames (videos) over the measured seconds: per core over CPU time, per second over wall time
    assert result["frames_per_s_per_core"] == pytest.approx(25 / result["cpu_seconds"], rel=0.01)
    assert result["frames_per_s"] == pytest.approx(25 / result["wall_seconds"], rel=0.01)
    assert result["videos_per_s_per_core"] == pytest.approx(1 / result["cpu_seconds"], rel=0.01)
    # per core >= per second / cores: no process gets more than all cores (the reverse, per core <= per second x
    # cores, only says the process had half a core of 2, which a loaded host does not give: it failed so)
    assert result["frames_per_s_per_core"] >= result["frames_per_s"] / cores / 1.01
    phases = result["phase_seconds_per_video"]
    assert set(phases) == {"decode (x2)", "face mesh", "crop + encode + audio + labels"}
    assert sum(p["wall"] for p in phases.values()) == pytest.approx(result["wall_seconds"], abs=0.01)
    assert sum(p["cpu"] for p in phases.values()) == pytest.approx(result["cpu_seconds"], abs=0.01)
    assert phases["decode (x2)"]["wall"] > 0 and phases["face mesh"]["cpu"] > 0
