import json

import pytest

from dawn_train.cli import main
from dawn_train.tracking.report import build_report, smooth


def write_run(root, name, losses, val):
    run = root / name
    (run / "csv").mkdir(parents=True)
    rows = ["step,epoch,train/loss,val/l1"] + [f"{i},0,{v}," for i, v in enumerate(losses)] + [f"{len(losses)},0,,{val}"]
    (run / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run


def test_report_compares_runs_side_by_side(tmp_path):
    a = write_run(tmp_path, "window-40", [3.0, 2.0, 1.5], 0.25)
    b = write_run(tmp_path, "window-80", [3.0, 1.0, 0.5], 0.125)
    (b / "eval.json").write_text(json.dumps({"metrics": {"FVD16": 52.05}}))
    path = build_report([a, b], tmp_path / "report")
    text = path.read_text()
    assert "| run | train/loss | val/l1 | eval/FVD16 |" in text
    assert "| window-40 | 1.5 | 0.25 | - |" in text and "| window-80 | 0.5 | 0.125 | 52.05 |" in text
    for picture in ("train_loss.png", "val_l1.png"):
        assert (tmp_path / "report" / picture).stat().st_size > 1000
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert summary["window-80"]["val/l1"] == 0.125 and summary["window-80"]["eval/FVD16"] == 52.05


def test_report_errors_name_the_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "no csv/metrics.csv" in capsys.readouterr().err


def test_smooth_is_a_running_mean():
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == pytest.approx([1.0, 2.0, 4.0, 6.0])
