"""dawn_train.checkpoints: every format through one reader; kinds told apart; export keeps EMA weights and
the stage record (DeepSpeed directories: tests/stages/test_a2v_deepspeed.py)."""
from __future__ import annotations

import pytest
import torch

from dawn_train import checkpoints
from dawn_train.inference.pipeline import load_a2v
from tests.stages.test_a2v import TINY_A2V

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
