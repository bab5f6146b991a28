"""Sweep files: expansion, validation before anything is written, rendering of the array script,
and the error when sbatch is missing.  Nothing here submits (see test_slurm.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dawn_train import cli
from dawn_train.cli import build_parser
from dawn_train.launch import slurm
from dawn_train.launch.sweep import SweepError, expand, failed_points, load_sweep, plan, run_sweep

from .conftest import REPO, tiny_lfg_config


def write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture
def lfg_config(tmp_path):
    return tiny_lfg_config(tmp_path / "lfg.yaml", tmp_path / "shards", tmp_path / "runs" / "lfg")


def lfg_sweep(tmp_path, config, **changes) -> dict:
    sweep = {"name": "lfg-lr", "configs": [str(config)], "fixed": {"trainer.max_steps": 3},
             "grid": {"model.init_args.lr": [0.001, 0.002], "data.init_args.batch_size": [2]},
             "out_dir": str(tmp_path / "sweeps" / "lfg-lr"), "slurm": {"cpus_per_task": 1, "max_parallel": 2}}
    sweep.update(changes)
    return sweep


@pytest.mark.parametrize("change, message", [
    ({"gird": {"a": [1]}}, "unknown key"),
    ({"grid": {}}, "'grid' must be a non-empty"),
    ({"grid": {"model.init_args.lr": []}}, "grid key 'model.init_args.lr' needs a non-empty list"),
    ({"grid": {"model.init_args.lr": [1, 1]}}, "grid key 'model.init_args.lr' repeats"),
    ({"grid": {"--lr": [1]}}, "grid key '--lr' must be a dotted fit config key"),
    ({"configs": ["nope.yaml"]}, "key 'configs': nope.yaml does not exist"),
    ({"slurm": {"gpus": 4}}, "slurm.\\['gpus'\\]"),
    ({"slurm": {"nodes": "two"}}, "slurm.nodes"),
    ({"name": "a b"}, "key 'name'"),
])
def test_bad_sweep_file_names_the_key(tmp_path, lfg_config, change, message):
    path = write(tmp_path / "sweep.yaml", lfg_sweep(tmp_path, lfg_config, **change))
    with pytest.raises(SweepError, match=message):
        load_sweep(path)


@pytest.mark.parametrize("key, value, message", [
    ("model.init_args.lrr", [0.1], "lrr"),                       # unknown key
    ("model.init_args.lr", [0.1, "fast"], "lr"),                 # bad value
    ("trainer.max_stepz", [3], "max_stepz"),
])
def test_bad_override_fails_before_anything_is_written(tmp_path, lfg_config, key, value, message):
    sweep = lfg_sweep(tmp_path, lfg_config, grid={key: value})
    path = write(tmp_path / "sweep.yaml", sweep)
    with pytest.raises(SweepError, match=message) as info:
        run_sweep(path)
    assert "does not validate" in str(info.value)
    assert not Path(sweep["out_dir"]).exists()
    assert cli.main(["sweep", str(path)]) == 2  # one clear line, no traceback


def test_fit_sweep_renders_configs_and_array_script(tmp_path, lfg_config, capsys):
    sweep_file = write(tmp_path / "sweep.yaml", lfg_sweep(tmp_path, lfg_config))
    assert cli.main(["sweep", str(sweep_file), "--dry-run"]) == 0
    assert "not submitted" in capsys.readouterr().out
    out = tmp_path / "sweeps" / "lfg-lr"
    record = json.loads((out / "sweep.json").read_text())
    names = [p["name"] for p in record["points"]]
    assert names == ["p000-lr=0.001-batch_size=2", "p001-lr=0.002-batch_size=2"]
    for point, lr in zip(record["points"], (0.001, 0.002)):
        config = yaml.safe_load((out / "configs" / f"{point['name']}.yaml").read_text())
        run_dir = str(out / point["name"])
        assert config["model"]["init_args"]["lr"] == lr and config["trainer"]["max_steps"] == 3
        assert config["data"]["init_args"]["batch_size"] == 2
        # the point is a run (run.root, run.name): every directory follows it, the data path does not
        assert config["run"]["name"] == point["name"] and config["trainer"]["default_root_dir"] == run_dir
        assert config["checkpoint"]["dirpath"] == run_dir + "/checkpoints"
        assert config["data"]["init_args"]["shards"] == str(tmp_path / "shards")
        wandb, csv = config["trainer"]["logger"]
        assert wandb["init_args"]["save_dir"] == run_dir and csv["init_args"]["save_dir"] == run_dir
        assert wandb["init_args"]["group"] == "lfg-lr" and wandb["init_args"]["name"] == point["name"]
        assert wandb["init_args"]["tags"] == ["sweep:lfg-lr", f"lr={lr}", "batch_size=2"]
        args = (out / "points" / f"{point['index']:03d}.args").read_text().splitlines()
        assert args == ["fit", "-c", str(out / "configs" / f"{point['name']}.yaml")]
        assert "WANDB_RUN_GROUP=lfg-lr" in (out / "points" / f"{point['index']:03d}.env").read_text()
    script = (out / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0,1%2" in script and "#SBATCH --cpus-per-task=1" in script
    assert "#SBATCH --job-name=sweep-lfg-lr" in script and "#SBATCH --signal=SIGUSR1@90" in script
    assert f"SWEEP_DIR=${{SWEEP_DIR:-{out.resolve()}}}" in script
    assert script.count("#SBATCH --array") == 1 and script.count("#SBATCH --ntasks-per-node") == 1

    # --only-failed: point 0 finished, point 1 did not (nothing queued: no jobs.txt)
    (out / "status" / "000").write_text("done 0 1_0\n")
    (out / "status" / "001").write_text("failed 1 1_1\n")
    sweep = load_sweep(sweep_file)
    assert failed_points(sweep, expand(sweep)) == [1]


def test_window_grid_expands_and_validates(tmp_path):
    sweep = load_sweep_unchecked(REPO / "experiments" / "ablations" / "window.yaml")
    assert sweep["grid"] == {"model.init_args.model.init_args.window_size": [20, 40, 80, 200, None]}
    # validate the same grid against the A2V model through the demo A2V configs (same stage, same key)
    demo = {**sweep, "configs": [f"experiments/{name}.yaml" for name in
                                 ("base", "demo/base", "demo/a2v_stage1", "demo/a2v_stage2")],
            "out_dir": str(tmp_path / "window")}
    loaded = load_sweep(write(tmp_path / "window.yaml", demo))
    points, configs, _ = plan(loaded)
    assert [p.name for p in points] == [f"p{i:03d}-window_size={w}" for i, w in
                                        enumerate(["20", "40", "80", "200", "null"])]
    assert [c["model"]["init_args"]["model"]["init_args"]["window_size"] for c in configs.values()] == [20, 40, 80, 200, None]
    real = [Path(c) for c in sweep["configs"]]
    if all(c.is_file() for c in real):
        points, configs, _ = plan(load_sweep(REPO / "experiments" / "ablations" / "window.yaml"))
        assert len(configs) == 5


def load_sweep_unchecked(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_command_sweep_validates_with_the_dawn_train_parser(tmp_path):
    base = {"name": "gen-window", "command": ["generate"], "args": ["--image", "face.png", "--audio", "speech.wav",
                                                                    "--config", "experiments/demo/generate.yaml"],
            "out_arg": "--out", "grid": {"--window-size": [20, 40]}, "out_dir": str(tmp_path / "gen")}
    points, configs, warnings = plan(load_sweep(write(tmp_path / "ok.yaml", base)), parser=build_parser())
    assert not configs and not warnings
    assert points[1].argv[-2:] == [f"--out={tmp_path / 'gen' / points[1].name}", "--window-size=40"]
    with pytest.raises(SweepError, match="window-size"):
        plan(load_sweep(write(tmp_path / "bad.yaml", {**base, "grid": {"--window-size": [20, "wide"]}})),
             parser=build_parser())
    # a command this installation does not have yet: rendered with a warning, refused for submission
    later = write(tmp_path / "eval.yaml", {**base, "command": ["eval-not-yet"], "args": []})
    summary = run_sweep(later, parser=build_parser())
    assert summary["warnings"] and Path(summary["script"]).is_file()
    with pytest.raises((SweepError, slurm.SlurmError)):
        run_sweep(later, submit=True, parser=build_parser())
    # without dawn-train's parser (launch does not import dawn_train.cli) the points are not validated
    assert "could not be validated" in plan(load_sweep(write(tmp_path / "np.yaml", base)), strict=False)[2][0]


def test_config_whose_directories_ignore_the_run_is_refused(tmp_path, lfg_config):
    """A stage config that spells its run folder literally would put every point in the same folder."""
    config = yaml.safe_load(lfg_config.read_text())
    config["trainer"]["default_root_dir"] = str(tmp_path / "runs" / "fixed")
    fixed = write(tmp_path / "fixed.yaml", config)
    path = write(tmp_path / "sweep.yaml", lfg_sweep(tmp_path, fixed))
    with pytest.raises(SweepError, match="are not under"):
        run_sweep(path)


def test_missing_sbatch_is_a_clear_error(tmp_path, lfg_config, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = write(tmp_path / "sweep.yaml", lfg_sweep(tmp_path, lfg_config))
    assert cli.main(["sweep", str(path), "--submit"]) == 2
    err = capsys.readouterr().err
    assert "`sbatch` not found on PATH" in err and "--dry-run" in err
    assert not (tmp_path / "sweeps").exists()
