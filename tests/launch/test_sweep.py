"""Sweep files: expansion, validation before anything is written, rendering of the array script,
and the error when sbatch is missing.  Nothing here submits (see test_slurm.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dawn_train import cli
from dawn_train.cli import build_parser
from dawn_train.launch import slurm
from dawn_train.launch.sweep import EVAL_AFTER, SweepError, expand, failed_points, load_sweep, plan, run_sweep, submit_command

from .conftest import DEMO_LFG, REPO, tiny_lfg_config


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
    assert cli.main(["sweep", str(path)]) != 0  # one clear line, no traceback (exit codes: launch/failures.py)


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
        assert config["run"]["sweep_values"] == {"lr": lr, "batch_size": 2}  # flat in the W&B config
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


def test_paths_with_spaces_stay_one_word_in_the_array_script(tmp_path, lfg_config, monkeypatch):
    """A checkout or environment in "My Projects", a run folder with spaces: the `#SBATCH` values are quoted (sbatch
    takes a double-quoted value as one word; unquoted it refuses the script) and the script's commands, which it
    splits as a shell does, keep the interpreter's path one word.  What the script's own lines make of them is run
    here in bash."""
    work = tmp_path / "My Projects.v2"
    work.mkdir()
    monkeypatch.chdir(work)
    python = "/opt/my envs/py 3.11/bin/python"
    monkeypatch.setattr(sys, "executable", python)
    sweep = lfg_sweep(tmp_path, lfg_config, out_dir=str(tmp_path / "sweep runs" / "lfg-lr"))
    assert cli.main(["sweep", str(write(tmp_path / "sweep.yaml", sweep)), "--dry-run"]) == 0
    script = (tmp_path / "sweep runs" / "lfg-lr" / "sweep.sbatch").read_text()
    assert f'#SBATCH --chdir="{work}"' in script
    assert f'#SBATCH --output="{tmp_path / "sweep runs" / "lfg-lr" / "logs"}/%A_%a.out"' in script
    text = script.splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("DAWN_TRAIN="))
    lines = text[start:text.index("fi", start) + 1]  # the defaults and the script's split of them into words
    assert lines[1].startswith("PYTHON=") and 'eval "DAWN_CMD=($DAWN_TRAIN)"' in lines[2]
    show = "\n".join(lines + ['printf "%s\\n" "${DAWN_CMD[@]}" --- "${PYTHON_CMD[@]}"'])
    env = {k: v for k, v in os.environ.items() if k not in ("DAWN_TRAIN", "PYTHON")}
    words = subprocess.run(["bash", "-c", show], capture_output=True, text=True, env=env, check=True).stdout
    assert words.splitlines() == [python, "-m", "dawn_train.cli", "---", python]
    # a user's own command line still overrides the default
    env.update(DAWN_TRAIN="'/srv/dawn env/bin/dawn-train' --debug", PYTHON="python3")
    words = subprocess.run(["bash", "-c", show], capture_output=True, text=True, env=env, check=True).stdout
    assert words.splitlines() == ["/srv/dawn env/bin/dawn-train", "--debug", "---", "python3"]


DEMO_A2V = [f"experiments/{name}.yaml" for name in ("base", "demo/base", "demo/a2v_stage1", "demo/a2v_stage2")]


def test_window_sweep_is_one_training_and_five_evals_on_the_official_protocol(tmp_path):
    """Paper Table 5 is an inference-time ablation: experiments/ablations/window.yaml trains once and evaluates
    that checkpoint at sampling windows 20/40/80/200/full on 200-frame test videos, DDIM 20, seed 1234."""
    sweep = load_sweep_unchecked(REPO / "experiments" / "ablations" / "window.yaml")
    assert sweep["grid"] == {"--window-size": [20, 40, 80, 200, None]}
    demo = {**sweep, "configs": DEMO_A2V, "out_dir": str(tmp_path / "window")}  # the same keys on the demo stage
    result = plan(load_sweep(write(tmp_path / "window.yaml", demo)), parser=build_parser())
    assert [t.name for t in result.trainings] == ["train"] and len(result.jobs) == 6
    evals = [j for j in result.jobs if j.kind == "eval"]
    assert [j.name for j in evals] == [f"p{i:03d}-window-size={w}" for i, w in enumerate(["20", "40", "80", "200", "null"])]
    ckpt = str(tmp_path / "window" / "train" / "checkpoints" / "last.ckpt")
    for job, window in zip(evals, ["20", "40", "80", "200", "null"]):
        assert job.argv[:3] == ["eval", "--ckpt", ckpt] and job.needs == 0 and job.env["WANDB_JOB_TYPE"] == "eval"
        assert job.argv[-2:] == ["--seed=1234", f"--window-size={window}"]
        assert all(w in job.argv for w in ("--max-frames", "200", "--steps", "20", "--split", "test", "--lfg"))
    assert result.points[4].columns == {"window_size": None}
    summary = run_sweep(write(tmp_path / "window.yaml", demo), parser=build_parser())
    out = tmp_path / "window"
    assert summary["trainings"] == 1 and summary["evals"] == 5
    assert "--array=0" in (out / "sweep.sbatch").read_text() and "--array=1,2,3,4,5%5" in (out / "eval.sbatch").read_text()
    point = json.loads((out / evals[4].name / "point.json").read_text())
    assert point["values"] == {"window_size": None} and point["training_dir"] == str(out / "train")


def dedupe_sweep(tmp_path, **changes) -> dict:
    """Two points that differ only in the sampling window and one that differs in training."""
    window, train_window = "model.init_args.model.init_args.window_size", "model.init_args.model.init_args.train_window_size"
    sweep = {"name": "dedupe", "configs": DEMO_A2V, "out_dir": str(tmp_path / "dedupe"),
             "grid": [{window: [4, None]}, {train_window: [4], window: [None]}],
             "eval": {"args": ["--shards", "demo_out/shards", "--max-videos", "1"]}}
    sweep.update(changes)
    return sweep


def test_points_with_identical_training_configs_train_once_and_share_the_checkpoint(tmp_path):
    result = plan(load_sweep(write(tmp_path / "s.yaml", dedupe_sweep(tmp_path))), parser=build_parser())
    assert [t.name for t in result.trainings] == ["train", "train-train_window_size=4"]
    assert [t.points for t in result.trainings] == [["p000-window_size=4", "p001-window_size=null"],
                                                    ["p002-train_window_size=4-window_size=null"]]
    first, second = (t.config["model"]["init_args"]["model"]["init_args"] for t in result.trainings)
    assert (first["train_window_size"], second["train_window_size"]) == (None, 4)
    assert first["window_size"] == 80  # the sampling window is the eval's, the training keeps its config's
    evals = [j for j in result.jobs if j.kind == "eval"]
    assert [j.needs for j in evals] == [0, 0, 1]
    assert evals[0].argv[2] == evals[1].argv[2] != evals[2].argv[2]  # the same checkpoint
    assert [j.argv[-1] for j in evals] == ["--window-size=4", "--window-size=null", "--window-size=null"]
    assert result.trainings[1].config["run"]["sweep_values"] == {"train_window_size": 4}
    # without `eval` the sampling window is a training setting (validation samples use it): three trainings
    no_eval = dedupe_sweep(tmp_path, eval=None, out_dir=str(tmp_path / "no_eval"))
    del no_eval["eval"]
    assert len(plan(load_sweep(write(tmp_path / "n.yaml", no_eval))).trainings) == 3


def test_repeat_seeds_are_separate_trainings_with_seed_offsets(tmp_path):
    sweep = dedupe_sweep(tmp_path, grid={"--window-size": [4]}, seeds=[0, 3])
    result = plan(load_sweep(write(tmp_path / "s.yaml", sweep)), parser=build_parser())
    assert [t.name for t in result.trainings] == ["train-seed=0", "train-seed=3"]
    assert [t.config["seed_offset"] for t in result.trainings] == [0, 3]
    assert [p.name for p in result.points] == ["p000-window-size=4-seed=0", "p000-window-size=4-seed=3"]
    assert [j.argv[-2] for j in result.jobs if j.kind == "eval"] == ["--seed=1234", "--seed=1237"]
    with pytest.raises(SweepError, match="seeds"):
        load_sweep(write(tmp_path / "bad.yaml", {**sweep, "seeds": [1, 1]}))


def test_seed_offset_changes_the_initial_weights_and_draws(tmp_path, monkeypatch):
    """`--seed_offset` (a sweep's repeat seeds) reseeds before any class is built: another offset gives other
    initial weights and random draws, the same offset the same ones, and offset k from seed s is seed s + k."""
    import lightning as L
    import torch

    from dawn_train.stages.cli import DawnCLI

    monkeypatch.setenv("WANDB_MODE", "disabled")

    def start(*extra: str) -> tuple[torch.Tensor, torch.Tensor]:
        args = [w for f in DEMO_LFG for w in ("-c", str(f))] + [f"--run.root={tmp_path / 'runs'}",
                                                                "--trainer.logger=false", *extra]
        built = DawnCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                        run=False, args=args, save_config_callback=None)
        return next(built.model.parameters()).detach().clone(), torch.rand(4)

    weights, draws = zip(*(start(*offset) for offset in ([], ["--seed_offset=3"], ["--seed_offset=3"],
                                                          ["--seed_everything=3"])))
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(draws[0], draws[1])
    assert torch.equal(weights[1], weights[2]) and torch.equal(draws[1], draws[2])
    assert torch.equal(weights[1], weights[3]) and torch.equal(draws[1], draws[3])  # demo seed_everything: 0


def load_sweep_unchecked(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_command_sweep_validates_with_the_dawn_train_parser(tmp_path):
    base = {"name": "gen-window", "command": ["generate"], "args": ["--image", "face.png", "--audio", "speech.wav",
                                                                    "--config", "experiments/demo/generate.yaml"],
            "out_arg": "--out", "grid": {"--window-size": [20, 40]}, "out_dir": str(tmp_path / "gen")}
    result = plan(load_sweep(write(tmp_path / "ok.yaml", base)), parser=build_parser())
    assert not result.trainings and not result.warnings
    points = result.points
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
    assert "could not be validated" in plan(load_sweep(write(tmp_path / "np.yaml", base)), strict=False).warnings[0]


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
    assert cli.main(["sweep", str(path), "--submit"]) == 1
    err = capsys.readouterr().err
    assert "`sbatch` not found on PATH" in err and "--dry-run" in err
    assert not (tmp_path / "sweeps").exists()


def test_the_printed_submit_command_keeps_the_eval_dependency_and_quotes_paths(tmp_path):
    """`sweep FILE` without --submit prints the command that submits what it rendered; run by a shell, it submits the
    eval array after the training array, as --submit does (sbatch here records its arguments)."""
    out = tmp_path / "sweep runs.v1"
    scripts = {"sweep": out / "sweep.sbatch", "eval": out / "eval.sbatch"}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    (bin_dir / "sbatch").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                    f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                                    "print('4242;cluster')\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", submit_command(scripts)], env=env, check=True, capture_output=True)
    first, second = (json.loads(line) for line in calls.read_text().splitlines())
    assert first == ["--parsable", str(scripts["sweep"])]
    assert second == [o.format(job="4242") for o in EVAL_AFTER] + [str(scripts["eval"])]
    assert submit_command({"eval": scripts["eval"]}) == f"sbatch '{scripts['eval']}'"
