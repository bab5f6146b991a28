"""A tiny window sweep run here (`dawn-train sweep --local`), end to end with the real Trainer and offline W&B:
two points that differ only in the sampling window share one training, a third trains with a window; three
evals; the report has three rows with the right best marks and the W&B Report; the training runs carry the
W&B conventions (full config, git commit, manifest hash, metric summaries, checkpoint artifact, eval numbers)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from dawn_train import cli
from dawn_train.metrics.networks.syncnet import SyncNet
from dawn_train.tracking import read_offline_run
from dawn_train.tracking.directions import metric_direction
from dawn_train.tracking.report import build_report
from tests.stages.test_a2v import TINY_A2V, make_tiny_lfg

from .conftest import REPO

MODEL = "model.init_args.model.init_args"


def tiny_window_sweep(tmp_path, shards, lfg, syncnet) -> dict:
    tiny = {f"{MODEL}.{k}": list(v) if isinstance(v, tuple) else v for k, v in TINY_A2V.items()
            if k != "sampling_timesteps"}
    fixed = {**tiny, "data.init_args.shards": str(shards), "model.init_args.lfg_checkpoint": str(lfg),
             "trainer.max_steps": 2, "trainer.val_check_interval": 2, "trainer.limit_val_batches": 1,
             "trainer.log_every_n_steps": 1, "trainer.enable_progress_bar": False, "checkpoint.every_n_train_steps": 2,
             "data.init_args.clip_len": 4, "data.init_args.batch_size": 2, "model.init_args.sample_steps": 1,
             "model.init_args.val_metrics": None, "model.init_args.timestep_range": [200, 800]}
    return {"name": "tiny-window", "out_dir": str(tmp_path / "sweeps" / "tiny window"),  # a space in the path
            "configs": [str(REPO / "experiments" / f"{n}.yaml") for n in ("base", "demo/base", "demo/a2v_stage1")],
            "fixed": fixed,
            "grid": [{f"{MODEL}.window_size": [4, None]},                                  # one training, two evals
                     {f"{MODEL}.train_window_size": [4], f"{MODEL}.window_size": [None]}],  # its own training
            "eval": {"args": ["--shards", str(shards), "--max-videos", "1", "--max-frames", "12", "--steps", "1",
                              "--syncnet-weights", str(syncnet), "--log-videos", "1"]}}


def assert_marks_are_best(rows, best: dict) -> None:
    for metric, names in best.items():
        values = {row.name: row.metrics[metric] for row in rows if metric in row.metrics}
        direction = metric_direction(metric)
        if direction in ("min", "max"):
            want = (min if direction == "min" else max)(values.values())
            assert {n for n, v in values.items() if v == want} == set(names), metric


@pytest.mark.slow
def test_window_sweep_trains_twice_evaluates_three_times_and_reports(tmp_path, synth_raw, synth_shards, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    lfg = make_tiny_lfg(synth_raw, tmp_path / "lfg.pt")
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), tmp_path / "syncnet_v2.model")  # random weights: wiring, not quality
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(tiny_window_sweep(tmp_path, synth_shards, lfg, tmp_path / "syncnet_v2.model")))
    assert cli.main(["sweep", str(sweep_file), "--local"]) == 0, \
        "\n".join(p.read_text()[-3000:] for p in (tmp_path / "sweeps" / "tiny window" / "logs").glob("*.out"))

    out = tmp_path / "sweeps" / "tiny window"
    record = json.loads((out / "sweep.json").read_text())
    assert [(j["kind"], j["name"]) for j in record["jobs"]] == [
        ("fit", "train"), ("fit", "train-train_window_size=4"), ("eval", "p000-window_size=4"),
        ("eval", "p001-window_size=null"), ("eval", "p002-train_window_size=4-window_size=null")]
    assert sorted(p.name for p in out.glob("*/checkpoints/last.ckpt")) == ["last.ckpt"] * 2  # trained twice
    evals = [json.loads((out / p["name"] / "eval.json").read_text()) for p in record["points"]]
    assert [e["settings"]["window_size"] for e in evals] == [4, None, None]  # evaluated three times
    assert evals[0]["settings"]["a2v"] == evals[1]["settings"]["a2v"] != evals[2]["settings"]["a2v"]

    # the W&B conventions of a training run, read back with wandb's offline reader
    train = read_offline_run(out / "train")
    config = train["config"]
    assert config["config"]["data"]["init_args"]["shards"] == str(synth_shards) and "trainer" in config["config"]
    assert len(config["git_commit"]) == 40 and len(config["data_manifest_sha256"]) == 64
    assert config["config"]["model"]["init_args"]["model"]["init_args"]["train_window_size"] is None
    assert train["metrics"]["val/loss"]["summary"] == {"min": True, "last": True}
    assert [a["name"] for a in train["artifacts"] if a["type"] == "model"] == [f"model-{train['runs'][0]['id']}"]
    other = read_offline_run(out / "train-train_window_size=4")
    assert [a["name"] for a in other["artifacts"] if a["type"] == "model"] == [  # `=` is not allowed in a name
        f"model-{other['runs'][0]['id']}".replace("=", "_")]
    assert {"eval/p000-window_size=4/LSE-D", "eval/p001-window_size=null/LSE-D"} <= set(train["summary"])
    assert other["config"]["train_window_size"] == 4  # the swept value, flat

    # the report: three rows, the swept values as columns, best marks by direction, Table 5 and the W&B Report
    result = build_report([out], tmp_path / "report", wandb=True)
    rows = result["rows"]
    assert [r.name for r in rows] == [p["name"] for p in record["points"]]
    assert [r.values for r in rows] == [{"window_size": 4}, {"window_size": None},
                                        {"train_window_size": 4, "window_size": None}]
    assert rows[0].metrics["val/loss"] == rows[1].metrics["val/loss"]  # one training behind both
    assert {"val/loss", "eval/LSE-D"} <= set(result["table"]["metrics"])
    assert_marks_are_best(rows, json.loads((tmp_path / "report" / "metrics.json").read_text())["best"])
    assert "Paper Table 5" in result["markdown"].read_text()
    assert "tiny-window" in result["wandb_report"].read_text()
