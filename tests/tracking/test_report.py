"""`dawn-train report`: rows from run folders, config.yaml, sweeps and eval points; best marks by metric direction;
seeds as mean +- std; the paper's layout; skipped non-run folders; the W&B Report built offline."""
import json

import pytest
import yaml

from dawn_train.cli import main
from dawn_train.tracking.directions import best_index, metric_direction
from dawn_train.tracking.report import build_report, smooth


def write_run(root, name, losses, vals, config=None, evaluation=None):
    """A run folder as a stage writes it: csv/metrics.csv (train/loss per step, val/l1 per validation),
    config.yaml and, optionally, eval.json."""
    run = root / name
    (run / "csv").mkdir(parents=True)
    rows = ["step,epoch,train/loss,val/l1"] + [f"{i},0,{v}," for i, v in enumerate(losses)]
    rows += [f"{len(losses) + i},0,,{v}" for i, v in enumerate(vals)]
    (run / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    if config is not None:
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    if evaluation is not None:
        (run / "eval.json").write_text(json.dumps(evaluation))
    return run


def config_with(lr, name):
    return {"model": {"init_args": {"lr": lr, "model": {"init_args": {"dim": 8}}}},
            "run": {"name": name}, "trainer": {"default_root_dir": f"runs/{name}", "max_steps": 3}}


def test_report_reads_config_marks_best_and_uses_the_best_not_the_last_value(tmp_path):
    a = write_run(tmp_path, "lr-a", [3.0, 2.0, 1.5], [0.5, 0.25, 0.4], config_with(1e-3, "lr-a"))
    b = write_run(tmp_path, "lr-b", [3.0, 1.0, 0.5], [0.3, 0.125, 0.2], config_with(2e-3, "lr-b"),
                  {"metrics": {"FVD16": 52.05, "LSE-C": 6.0}, "ground_truth": {}})
    result = build_report([a, b], tmp_path / "report")
    text = result["markdown"].read_text()
    # the swept setting comes from config.yaml (only what differs, not the run's name or folders)
    assert "| run | lr | train/loss | val/l1 | eval/FVD16 |" in text
    # val/l1: the best validation value (0.25, not the last 0.4); the best of each column in bold
    assert "| lr-a | 0.001 | 1.5 | 0.25 | - |" in text
    assert "| lr-b | 0.002 | **0.5** | **0.125** | 52.05 |" in text
    for picture in ("train_loss.png", "val_l1.png"):
        assert (tmp_path / "report" / picture).stat().st_size > 1000
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert summary["rows"]["lr-b"]["metrics"]["val/l1"] == 0.125 and summary["rows"]["lr-b"]["best_step"]["val/l1"] == 4
    assert summary["best"]["val/l1"] == ["lr-b"]
    # eval numbers: the paper's Table 1 layout with the published row beside ours
    assert "Paper Table 1 layout" in text and "| DAWN paper (HDTF) | 9.6 | 60.34 |" in text
    assert "| ground truth, paper (HDTF) | - | - | - | 7.95 | 7.33 | 1 | 0.267 | 0.75 |" in text


def test_directions_and_closest_to_ground_truth():
    assert metric_direction("val/loss_mouth") == "min" and metric_direction("eval/LSE-C") == "max"
    assert metric_direction("eval/Blink/s") == "target" and metric_direction("perf/steps_per_s") is None
    assert best_index([0.9, 0.7, None], "target", target=0.75) == [1]
    assert best_index([3.0, 3.0, 4.0], "min") == [0, 1] and best_index([1.0], "min") == []


def test_globbed_sweep_folders_are_skipped_and_an_empty_selection_fails(tmp_path, capsys):
    run = write_run(tmp_path, "p000-x", [1.0], [0.5])
    (tmp_path / "points").mkdir()  # `report runs/sweeps/<name>/p*` also matches the sweep's points/ folder
    assert main(["report", str(run), str(tmp_path / "points"), "--out", str(tmp_path / "r")]) == 0
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 1
    assert "no run folder" in capsys.readouterr().err


def test_lower_is_better_matches_whole_name_parts_only():
    for key in ("val/rc", "val/kl", "train/loss_diffusion", "val/mouth_l1", "train/l1-pyramid", "val/recon_err",
                "val/loss/mouth"):
        assert metric_direction(key) == "min", key
    # "rc", "kl", "err", "l1" inside other words say nothing about the direction
    for key in ("val/src_frac", "val/circle_fit", "val/sparkle", "val/ankle_angle", "val/terror_rate",
                "val/l1ratio", "val/blink_rate_data"):
        assert metric_direction(key) is None, key


def eval_point(root, name, window, seed, fvd, training):
    folder = root / name
    folder.mkdir()
    (folder / "point.json").write_text(json.dumps({"sweep": "w", "group": "w", "point": name, "seed": seed,
                                                   "values": {"window_size": window}, "training_dir": str(training)}))
    (folder / "eval.json").write_text(json.dumps({"metrics": {"FVD16": fvd, "BAS": None}, "ground_truth": {}}))
    return folder


def test_seeds_aggregate_as_mean_and_std_and_window_sweeps_print_table5(tmp_path):
    train = write_run(tmp_path, "train", [2.0, 1.0], [0.5])
    points = [eval_point(tmp_path, f"p00{i}-window_size={w}-seed={s}", w, s, fvd, train)
              for i, (w, s, fvd) in enumerate([(40, 0, 70.0), (40, 1, 74.0), (None, 0, 60.0), (None, 1, 64.0)])]
    result = build_report(points, tmp_path / "report")
    rows = {row.name: row for row in result["rows"]}
    assert set(rows) == {"p000-window_size=40", "p002-window_size=None"}
    full = rows["p002-window_size=None"]
    assert full.metrics["eval/FVD16"] == pytest.approx(62.0) and full.spread["eval/FVD16"] == pytest.approx(8 ** 0.5)
    assert full.seeds == [0, 1]
    text = result["markdown"].read_text()
    assert "| p002-window_size=None | null | 0,1 |" in text and "**62 +- 2.8**" in text
    assert "Paper Table 5" in text and "| full | **62 +- 2.8** | 63.95 |" in text and "| 40 | 72 +- 2.8 | 72.93 |" in text


def test_wandb_report_is_built_and_serialised_offline(tmp_path, monkeypatch):
    """The W&B Report object: runsets filtered to the sweep's group (training / eval runs), line plots of val/*
    grouped by the swept key, parallel coordinates from the swept key to the eval metrics, a media panel of the
    generated videos, the tables; serialised without any network access (no entity/project look-up)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    train = write_run(tmp_path, "train", [2.0, 1.0], [0.5, 0.4])
    points = [eval_point(tmp_path, f"p00{i}-window_size={w}", w, None, fvd, train)
              for i, (w, fvd) in enumerate([(20, 150.0), (80, 52.0)])]
    result = build_report(points, tmp_path / "report", wandb=True)
    definition = json.loads(result["wandb_report"].read_text())
    text = json.dumps(definition)
    assert definition["display_name"] == "w: comparison"
    grids = [b for b in definition["spec"]["blocks"] if b["type"] == "panel-grid"]
    assert len(grids) == 2
    filters = [g["metadata"]["run_sets"][0]["filters"]["filters"] for g in grids]
    assert {"key": {"section": "run", "name": "group"}, "op": "=", "value": "w", "disabled": False} in filters[1]
    assert any(f["key"]["name"] == "jobType" and f["op"] == "=" and f["value"] == "eval" for f in filters[1])
    assert any(f["key"]["name"] == "jobType" and f["op"] == "!=" for f in filters[0])
    panels = [p["view_type"] for g in grids for p in g["metadata"]["panel_bank_section_config"]["panels"]]
    assert panels.count("Run History Line Plot") == 1 and "Parallel Coordinates Plot" in panels
    assert "Media Browser" in panels
    # the training curves: not grouped by the sampling window (eval-only: training runs do not carry it)
    assert '"group_by": "window_size.value"' not in text and "eval/FVD16" in text and "eval/samples" in text
    assert not [p for g in grids for p in g["metadata"]["panel_bank_section_config"]["panels"]
                if p["view_type"] == "Run History Line Plot" and p["config"].get("group_by")]
    assert "| window | FVD16 (ours) | FVD16 (paper) |" in text
    assert "Parallel" in result["wandb_summary"] and "'dawn_train'" in result["wandb_summary"]
    # --publish saves online only: offline it refuses with what to do
    assert main(["report", *map(str, points), "--out", str(tmp_path / "r"), "--publish"]) == 1


def test_training_curves_group_by_a_setting_the_training_runs_carry(tmp_path, monkeypatch):
    """Two trainings that differ in their training window, each sampled at two windows: the line plots group by
    `train_window_size` (in each training's `run.sweep_values`, so in its W&B config), the parallel coordinates
    show both settings."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    points = []
    for i, train_window in enumerate((None, 4)):
        train = write_run(tmp_path, f"train-{i}", [2.0, 1.0], [0.5],
                          {"run": {"name": f"train-{i}", "sweep_values": {"train_window_size": train_window}}})
        for j, window in enumerate((20, None)):
            folder = eval_point(tmp_path, f"p{i}{j}-w={window}", window, None, 50.0 + j, train)
            record = json.loads((folder / "point.json").read_text())
            record["values"] = {"train_window_size": train_window, "window_size": window}
            (folder / "point.json").write_text(json.dumps(record))
            points.append(folder)
    text = build_report(points, tmp_path / "report", wandb=True)["wandb_report"].read_text()
    assert '"group_by": "train_window_size.value"' in text and '"group_by": "window_size.value"' not in text


def test_smooth_is_a_running_mean():
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == pytest.approx([1.0, 2.0, 4.0, 6.0])
