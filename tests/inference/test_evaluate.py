"""`dawn-train eval`: generates the test split with a checkpoint and reports Table 1's metrics."""
import json
from pathlib import Path

import pytest
import torch

from dawn_train import checkpoints
from dawn_train.cli import main
from dawn_train.inference.evaluate import evaluate
from dawn_train.metrics.networks.syncnet import SyncNet
from dawn_train.tracking import read_offline_run
from tests.stages.test_a2v import TINY_A2V, make_tiny_lfg


@pytest.fixture(scope="module")
def models(synth_raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("eval_models")
    lfg = make_tiny_lfg(synth_raw, work / "lfg.pt")
    torch.manual_seed(0)
    config = {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": {**TINY_A2V, "dim_mults": [1, 2]}}
    a2v = checkpoints.save_converted(checkpoints.build(config), config, "a2v", work / "a2v.pt")
    torch.manual_seed(0)
    syncnet = work / "syncnet_v2.model"  # the reference layout with random values: wiring, not quality
    torch.save(SyncNet().state_dict(), syncnet)
    return lfg, a2v, syncnet


def test_eval_reports_table_and_names_unavailable_metrics(models, synth_shards, tmp_path, capsys):
    lfg, a2v, syncnet = models
    out = tmp_path / "eval.json"
    code = main(["eval", "--ckpt", str(a2v), "--lfg", str(lfg), "--shards", str(synth_shards), "--max-videos", "2",
                 "--max-frames", "20", "--steps", "1", "--syncnet-weights", str(syncnet), "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())
    assert result["settings"]["videos"] == 2 and result["settings"]["pose_blink"] == "ground truth"
    for row in ("metrics", "ground_truth"):
        assert set(result[row]) == {"FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM", "BAS", "Blink/s"}
        assert result[row]["FID"] is None and result[row]["LSE-D"] is not None
    # nothing measured the generated frames' head motion or eyes: n/a with the reason, never the driving
    # signals' values (which equal the ground truth's) shown as the checkpoint's
    assert result["metrics"]["BAS"] is None and result["metrics"]["Blink/s"] is None
    assert result["ground_truth"]["Blink/s"] is not None
    assert set(result["unavailable"]) == {"FID", "FVD16", "FVD32", "CSIM", "BAS", "Blink/s"}
    assert all("metric unavailable" in why for name, why in result["unavailable"].items() if name not in ("BAS", "Blink/s"))
    assert "measured on the generated frames" in result["unavailable"]["Blink/s"]
    assert "n/a Blink/s" in printed and result["synthetic"] is None
    assert "DAWN paper (HDTF)" in printed and "FVD16" in printed
    logged = read_offline_run(tmp_path / "eval_wandb")
    assert any("eval/LSE-D" in row for row in logged["history"])


def test_eval_with_pbnet_drives_pose_from_audio(models, synth_shards, tmp_path):
    from tests.inference.test_generate import tiny_pbnet

    lfg, a2v, _ = models
    pose = tiny_pbnet(tmp_path / "pose.pt", 6, 0, "pbnet-pose")
    blink = tiny_pbnet(tmp_path / "blink.pt", 0, 2, "pbnet-blink")
    result = evaluate(str(a2v), str(lfg), str(synth_shards), max_videos=1, max_frames=12, steps=1,
                      pbnet_pose=str(pose), pbnet_blink=str(blink), out=str(tmp_path / "e.json"), log_wandb=False,
                      progress=False)
    assert result["settings"]["pose_blink"] == "pbnet"
    # the PBNet-sampled openness drove the video but is not a measurement of it: n/a without a probe
    assert result["metrics"]["Blink/s"] is None and "Blink/s" in result["unavailable"]
    # one PBNet: the other part is the ground truth, and the settings say so; PBNet's goals need both
    result = evaluate(str(a2v), str(lfg), str(synth_shards), max_videos=1, max_frames=12, steps=1,
                      pbnet_pose=str(pose), out=str(tmp_path / "e1.json"), log_wandb=False, progress=False)
    assert result["settings"]["pose_blink"] == "pbnet pose, ground-truth blink"
    with pytest.raises(ValueError, match="give both --pbnet-pose and --pbnet-blink"):
        evaluate(str(a2v), str(lfg), str(synth_shards), pbnet_pose=str(pose), probe=str(pose), goals="pbnet",
                 out=str(tmp_path / "e2.json"), log_wandb=False, progress=False)


def test_eval_bad_split_is_a_clear_error(models, synth_shards, capsys):
    lfg, a2v, _ = models
    assert main(["eval", "--ckpt", str(a2v), "--lfg", str(lfg), "--shards", str(synth_shards), "--split", "test",
                 "--quiet", "--no-wandb"]) == 1
    assert "no 'test' split" in capsys.readouterr().err


def test_eval_refuses_shards_of_another_resolution(models, synth_shards, tmp_path, capsys):
    """A checkpoint trained at 128 px evaluated on 64-px shards is an error naming both, not a number."""
    lfg, _, _ = models
    config = {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": {**TINY_A2V, "dim_mults": [1, 2]}}
    a2v = checkpoints.save_converted(checkpoints.build(config), config, "a2v", tmp_path / "a2v128.pt",
                                     metadata={"dawn_a2v": {"image_size": 128}})
    assert main(["eval", "--ckpt", str(a2v), "--lfg", str(lfg), "--shards", str(synth_shards), "--quiet",
                 "--no-wandb"]) != 0
    err = capsys.readouterr().err
    assert "64-px frames" in err and "128-px frames" in err and "Traceback" not in err


def test_eval_with_probe_scores_generated_frames_beside_the_still_frame(models, synth_shards, tmp_path, capsys):
    """With a synthetic probe, eval prints the ground-truth table (generated / still frame / probe floor) and
    measures Blink/s and BAS of the generated videos on their frames.  (A briefly trained probe: this checks
    the wiring; the probe's accuracy is tests/metrics/test_synthetic.py's.)"""
    from tests.stages.test_a2v import make_tiny_probe

    lfg, a2v, _ = models
    probe = make_tiny_probe(tmp_path / "probe.pt")
    out = tmp_path / "eval.json"
    assert main(["eval", "--ckpt", str(a2v), "--lfg", str(lfg), "--shards", str(synth_shards), "--max-videos", "1",
                 "--max-frames", "16", "--steps", "1", "--probe", str(probe), "--out", str(out), "--quiet",
                 "--no-wandb", "--goals", "demo"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["synthetic"]) == {"generated", "still frame", "LFG ceiling", "ground truth"}
    for row in ("generated", "still frame", "LFG ceiling"):
        assert result["synthetic"][row]["PSNR"] is not None and result["synthetic"][row]["MouthCorr"] is not None
    assert result["metrics"]["Blink/s"] is not None and "Blink/s" not in result["unavailable"]
    assert "still frame (baseline)" in printed and "real (probe floor)" in printed and "(ceiling)" in printed
    # the demo's goals, judged on the generated row against the still frame, are printed and saved
    assert [g["metric"] for g in result["goals"]] == ["PSNR", "MouthCorr"] and "goals (demo):" in printed
    psnr = result["goals"][0]
    assert psnr["met"] == (psnr["generated"] >= psnr["still_frame"])
    # per-frame eye openness of each video: the frames behind the Blink/s figures (metrics/synthetic/blink_traces)
    eyes = result["videos"][0]["eyes"]
    assert set(eyes) == {"ground truth", "LFG ceiling", "generated", "driving"}
    assert all(len(trace) == result["videos"][0]["frames"] for trace in eyes.values())
    from dawn_train.metrics.blink import count_blinks
    seconds = result["videos"][0]["frames"] / 25
    assert count_blinks(eyes["generated"]) / seconds == pytest.approx(result["synthetic"]["generated"]["Blink/s"])
    assert count_blinks(eyes["ground truth"]) / seconds == pytest.approx(result["synthetic"]["ground truth"]["Blink/s"])
    assert result["blink_figure"] == str(tmp_path / "eval_blinks.png") and (tmp_path / "eval_blinks.png").is_file()
    assert f"eye openness per video: {tmp_path / 'eval_blinks.png'}" in printed


def test_goals_need_a_probe_and_the_probe_must_be_there(models, synth_shards, tmp_path, capsys):
    lfg, a2v, _ = models
    with pytest.raises(ValueError, match="--probe"):
        evaluate(str(a2v), str(lfg), str(synth_shards), goals="demo", out=str(tmp_path / "e.json"), log_wandb=False)
    missing = tmp_path / "my probes.v1" / "probe.pt"  # a typo: an error before any work, not n/a metrics
    common = ["--lfg", str(lfg), "--shards", str(synth_shards), "--probe", str(missing), "--goals", "demo", "--quiet"]
    for command in (["eval", "--ckpt", str(a2v), "--no-wandb"], ["eval-lfg"]):
        assert main([*command, *common]) == 1
        assert f"--probe {missing}: no such probe file" in capsys.readouterr().err


def test_eval_writes_into_the_training_run_and_declares_the_checkpoint_it_used(models, synth_shards, tmp_path):
    """A checkpoint inside a training run (a real offline W&B run of the logger every stage uses): eval logs its
    own run in the training run's group (table, per-video table, generated videos with audio), declares the
    training's checkpoint artifact as its input, and writes its numbers into the training run's summary, read
    back with wandb's own offline reader."""
    import shutil

    from lightning.pytorch.callbacks import ModelCheckpoint

    from dawn_train.tracking import DawnWandbLogger

    lfg, a2v, syncnet = models
    run = tmp_path / "runs" / "a2v-x"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "a2v.pt"
    shutil.copy(a2v, ckpt)
    logger = DawnWandbLogger(save_dir=str(run), name="a2v-x", group="window-test", job_type="a2v-stage1")
    logger.log_metrics({"val/loss": 1.0, "val/LSE-C": 2.0}, step=1)
    saved = ModelCheckpoint(dirpath=str(run / "checkpoints"))
    saved.last_model_path = str(ckpt)
    logger.after_save_checkpoint(saved)
    logger.finalize("success")  # the end of a fit: the checkpoint artifact, then the run is finished

    out = tmp_path / "p000-window_size=null" / "eval.json"
    assert main(["eval", "--ckpt", str(ckpt), "--lfg", str(lfg), "--shards", str(synth_shards), "--max-videos", "2",
                 "--max-frames", "12", "--steps", "1", "--syncnet-weights", str(syncnet), "--window-size", "none",
                 "--log-videos", "1", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["window_size"] is None  # `none`: full attention
    assert [v["video"] is not None for v in result["videos"]] == [True, False]

    training = read_offline_run(run)
    assert training["metrics"]["val/loss"]["summary"] == {"min": True, "last": True}
    assert training["metrics"]["val/LSE-C"]["summary"] == {"max": True, "last": True}
    assert training["summary"]["eval/LSE-D"] == pytest.approx(result["metrics"]["LSE-D"])
    assert training["summary"]["eval/window=none/LSE-D"] == training["summary"]["eval/LSE-D"]
    assert training["summary"]["eval/window=none/settings"]["window_size"] is None
    (logged,) = [a for a in training["artifacts"] if a["type"] == "model"]
    run_id = (run / "wandb_run_id").read_text().strip()
    assert logged["name"] == f"model-{run_id}" and logged["type"] == "model" and not logged["use_after_commit"]

    evaluation = read_offline_run(out.parent / "eval_wandb")
    assert evaluation["runs"][0]["group"] == "window-test" and evaluation["runs"][0]["job_type"] == "eval"
    assert evaluation["config"]["training_run"] == run_id
    (used,) = [a for a in evaluation["artifacts"] if a["type"] == "model"]  # (tables are artifacts too)
    assert used["use_after_commit"] and (used["name"], used["digest"]) == (logged["name"], logged["digest"])
    (row,) = evaluation["history"]  # (the reader prints the nested values of history rows dotted)
    assert row["eval/videos._type"] == "table-file" and row["eval/videos.nrows"] == 2
    assert row["eval/samples._type"] == "videos" and "eval/LSE-D" in row
    assert any(p.endswith(".mp4") for p in evaluation["media"])
    assert evaluation["metrics"]["eval/LSE-D"]["summary"] == {"min": True, "last": True}


def test_every_wrong_kind_of_checkpoint_is_refused_in_one_line(models, synth_shards, tmp_path, capsys):
    from tests.inference.test_generate import checkpoints_of_every_kind, wrong_kinds

    lfg, a2v, _ = models
    flags = {"lfg": "--lfg", "a2v": "--ckpt", "pbnet-pose": "--pbnet-pose", "pbnet-blink": "--pbnet-blink"}
    files = checkpoints_of_every_kind(lfg, a2v, tmp_path)
    for kind, wrong, given in wrong_kinds(files):
        options = [w for k, flag in flags.items() for w in (flag, str(given[k]))]
        code = main(["eval", *options, "--shards", str(synth_shards), "--max-videos", "1", "--max-frames", "8",
                     "--steps", "1", "--out", str(tmp_path / "e.json"), "--quiet", "--no-wandb"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err, (kind, wrong, err[-2000:])
        (line,) = [line for line in err.splitlines() if line.startswith("dawn-train: error:")]
        assert f"{files[wrong]}: holds a '{wrong}' checkpoint, expected '{kind}'" in line
    assert not (tmp_path / "e.json").exists()


def test_eval_output_is_checked_before_any_model_is_loaded(tmp_path, monkeypatch, capsys):
    """A directory, a path under a file or an unwritable folder as `--out` fails at once in one line (the
    checkpoints named here do not exist: they are never read)."""
    import os

    from dawn_train.inference import outputs

    missing = tmp_path / "no such.ckpt"
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    for out, message in ((tmp_path, "is a directory; give the output file, e.g."),
                         (blocker / "eval.json", "is a file, not a folder"),
                         (locked / "sub" / "eval.json", "permission denied")):
        code = main(["eval", "--ckpt", str(missing), "--lfg", str(missing), "--shards", str(tmp_path),
                     "--out", str(out), "--quiet", "--no-wandb"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err, err
        (line,) = [line for line in err.splitlines() if line.startswith("dawn-train: error:")]
        assert message in line and str(out) in line and "no such.ckpt" not in line
