"""`dawn-train bench prep`: the 720p input is made, prepared, and the figures are consistent."""
from __future__ import annotations

import pytest

from dawn_train.cli import main

pytest.importorskip("mediapipe", reason="the prep extra (pip install 'dawn-train[prep]') is not installed")


@pytest.mark.slow  # 720p encode + two decodes: ~15 s on 2 loaded cores
def test_bench_prep_reports_rates_per_core(capsys):
    assert main(["bench", "prep", "--seconds", "1", "--videos", "1", "--size", "64", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["frames_per_video"] == 25 and result["input"].startswith("1280x720")
    assert result["frames_per_s_per_core"] == pytest.approx(25 * result["videos_per_s_per_core"], rel=0.01)
    assert set(result["phase_seconds_per_video"]) == {"decode (x2)", "face mesh", "crop + encode + audio + labels"}
