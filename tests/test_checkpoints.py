"""dawn_train.checkpoints: every format through one reader; kinds told apart; export keeps EMA weights and
the stage record; a DeepSpeed A2V checkpoint directory (2 CPU processes) feeds generate and eval."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from dawn_train import checkpoints
from dawn_train.inference.pipeline import load_a2v, load_pipeline
from tests.conftest import REPO
from tests.launch.conftest import run_dawn
from tests.stages.test_a2v import FAST_ARGS, STAGE1, TINY_A2V, TINY_ARGS, make_tiny_lfg

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_a2v_config() -> dict:
    return {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": {**TINY_A2V, "dim_mults": [1, 2]}}


def lightning_like_a2v(path, ema_shift: float = 0.5) -> tuple[dict, dict]:
    """A file laid out as A2VStage's Lightning checkpoint: raw weights, EMA weights (shifted so they differ)
    and the stage record."""
    torch.manual_seed(0)
    config = tiny_a2v_config()
    model = checkpoints.build(config)
    raw = {f"model.{k}": v for k, v in model.state_dict().items()}
    ema = {f"ema.model.{k}": v + ema_shift if v.is_floating_point() else v for k, v in model.state_dict().items()}
    record = {"image_size": 64, "audio_feature": {"type": "logmel", "dim": 80}, "face_box_mean": [0.2, 0.2, 0.8, 0.9],
              "ref_pose_mean": [0.0] * 6, "ref_blink_mean": [0.3, 0.3], "curriculum_stage": 1, "lfg_checkpoint": "x"}
    torch.save({"pytorch-lightning_version": "2.6", "state_dict": {**raw, **ema}, "dawn_a2v": record,
                "hyper_parameters": {"model": config, "curriculum_stage": 1, "betas": (0.9, 0.99)}}, path)
    return model.state_dict(), record


def test_lightning_file_gives_ema_and_record(tmp_path):
    weights, record = lightning_like_a2v(tmp_path / "a2v.ckpt")
    ckpt = checkpoints.open_checkpoint(tmp_path / "a2v.ckpt", "a2v")
    assert ckpt.format == "lightning" and ckpt.metadata["dawn_a2v"] == record
    name = next(k for k, v in weights.items() if v.is_floating_point())
    assert torch.equal(ckpt.state_dict[name], weights[name])
    assert torch.equal(ckpt.ema_state_dict[name], weights[name] + 0.5)
    model, info = load_a2v(tmp_path / "a2v.ckpt")
    assert info.ema and info.image_size == 64 and info.face_box_mean == record["face_box_mean"]
    assert torch.equal(model.state_dict()[name], weights[name] + 0.5)


def test_export_round_trips_ema_and_record(tmp_path):
    weights, record = lightning_like_a2v(tmp_path / "a2v.ckpt")
    summary = checkpoints.export(tmp_path / "a2v.ckpt", "a2v", tmp_path / "a2v.pt")
    assert summary["ema"] and summary["metadata"] == ["dawn_a2v"]
    exported = checkpoints.open_checkpoint(tmp_path / "a2v.pt", "a2v")
    assert exported.format == "converted" and exported.metadata["dawn_a2v"] == record
    assert exported.hparams["curriculum_stage"] == 1
    original = checkpoints.open_checkpoint(tmp_path / "a2v.ckpt", "a2v")
    for ours, theirs in ((exported.state_dict, original.state_dict), (exported.ema_state_dict, original.ema_state_dict)):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    model, info = load_a2v(tmp_path / "a2v.pt")  # generation reads the export exactly as the training file
    assert info.ema and info.face_box_mean == record["face_box_mean"]
    # weights-only export: no EMA, no record
    checkpoints.export(tmp_path / "a2v.ckpt", "a2v", tmp_path / "raw.pt", fmt="state_dict")
    assert set(torch.load(tmp_path / "raw.pt", weights_only=True)) == set(weights)


def test_wrong_kind_is_named(tmp_path):
    lightning_like_a2v(tmp_path / "a2v.ckpt")
    with pytest.raises(checkpoints.CheckpointError, match="holds a 'a2v' checkpoint, expected 'lfg'"):
        checkpoints.open_checkpoint(tmp_path / "a2v.ckpt", "lfg")
    config = tiny_a2v_config()
    checkpoints.save_converted(checkpoints.build(config), config, "a2v", tmp_path / "conv.pt")
    with pytest.raises(checkpoints.CheckpointError, match="expected 'pbnet-pose'"):
        checkpoints.open_checkpoint(tmp_path / "conv.pt", "pbnet-pose")
    (tmp_path / "dir").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match="not a DeepSpeed checkpoint"):
        checkpoints.open_checkpoint(tmp_path / "dir", "a2v")


def _speech(path, seconds: float = 0.4) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes((audio * 32767).astype(np.int16).tobytes())


@pytest.mark.slow
def test_deepspeed_a2v_directory_feeds_generate_eval_and_export(synth_raw, synth_shards, tmp_path):
    """A2V stage 1 with EMA under ZeRO-2 on 2 CPU processes writes a checkpoint directory; generate and eval
    read it directly with its EMA weights and record, and `export` keeps both."""
    lfg = make_tiny_lfg(synth_raw, tmp_path / "lfg.pt")
    work = tmp_path / "work dir.v1"  # a path with a space and a dot, as users have
    work.mkdir()
    run_dawn(["fit", "-c", STAGE1, "-c", str(REPO / "experiments" / "strategies" / "deepspeed_stage_2.yaml"),
              "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.devices=2",
              f"--data.init_args.shards={synth_shards}", f"--model.init_args.lfg_checkpoint={lfg}",
              "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--data.init_args.clip_len=4",
              "--model.init_args.sample_every_n_val=0", *TINY_ARGS, *FAST_ARGS], timeout=600, cwd=work)
    (run,) = [p.parent.parent for p in work.glob("runs/*/checkpoints/last.ckpt")]
    last = run / "checkpoints" / "last.ckpt"
    assert (last / "latest").is_file(), "DeepSpeed writes a checkpoint directory"

    ckpt = checkpoints.open_checkpoint(last, "a2v")
    assert ckpt.format == "deepspeed" and ckpt.ema_state_dict is not None
    assert ckpt.metadata["dawn_a2v"]["image_size"] == 64 and len(ckpt.metadata["dawn_a2v"]["face_box_mean"]) == 4
    differ = [k for k in ckpt.state_dict if not torch.equal(ckpt.state_dict[k], ckpt.ema_state_dict[k])]
    assert len(differ) > len(ckpt.state_dict) / 2  # EMA (decay 0.9) lags the trained weights
    name = differ[0]
    pipe = load_pipeline(lfg, last, device="cpu")
    assert pipe.info.ema and pipe.info.face_box_mean == ckpt.metadata["dawn_a2v"]["face_box_mean"]
    assert torch.equal(pipe.a2v.state_dict()[name], ckpt.ema_state_dict[name])

    _speech(tmp_path / "speech.wav")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    proc = run_dawn(["generate", "--lfg", str(lfg), "--a2v", str(last), "--image", str(tmp_path / "face.png"),
                     "--audio", str(tmp_path / "speech.wav"), "--out", str(tmp_path / "out.mp4"), "--steps", "1",
                     "--quiet"], timeout=300)
    assert (tmp_path / "out.mp4").stat().st_size > 0 and "wrote" in proc.stdout
    run_dawn(["eval", "--ckpt", str(last), "--lfg", str(lfg), "--shards", str(synth_shards), "--max-videos", "1",
              "--max-frames", "8", "--steps", "1", "--out", str(tmp_path / "eval.json"), "--no-wandb", "--quiet"],
             timeout=300)
    assert json.loads((tmp_path / "eval.json").read_text())["settings"]["ema"] is True

    proc = run_dawn(["export", str(last), "--kind", "a2v", "--out", str(tmp_path / "a2v.pt")], timeout=300)
    assert "kept EMA weights, dawn_a2v" in proc.stdout
    exported = checkpoints.open_checkpoint(tmp_path / "a2v.pt", "a2v")
    assert torch.equal(exported.ema_state_dict[name], ckpt.ema_state_dict[name])
    assert exported.metadata == ckpt.metadata
