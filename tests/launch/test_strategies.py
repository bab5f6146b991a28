"""Strategies on CPU: presets resolve, 2-process DDP sees equal batches per rank, DeepSpeed ZeRO-2/3
train, save, resume and export to a file that loads without DeepSpeed."""
from __future__ import annotations

import json
import time

import pytest
import torch

from dawn_train import checkpoints
from dawn_train.launch.config import resolve_fit_config
from dawn_train.launch.strategies import PRESET_FILES, apply_activation_checkpointing

from .conftest import csv_rows, run_dawn, tiny_lfg_config


def preset_args(preset: str) -> list[str]:
    """-c files of a preset: the ZeRO-3 ones are overlays of deepspeed_stage_2.yaml."""
    files = (["deepspeed_stage_2"] if preset.startswith("deepspeed_stage_3") else []) + [preset]
    return [w for f in files for w in ("-c", f"experiments/strategies/{f}.yaml")]


@pytest.mark.parametrize("preset", PRESET_FILES)
def test_preset_composes_after_a_stage_config(preset):
    demo = ["experiments/base.yaml", "experiments/demo/base.yaml", "experiments/demo/lfg.yaml"]
    config = resolve_fit_config([w for f in demo for w in ("-c", f)] + preset_args(preset))
    trainer = config["trainer"]
    assert trainer["strategy"]["class_path"].startswith("dawn_train.launch.strategies.")
    assert trainer["precision"] == "32-true" and trainer["accumulate_grad_batches"] == 1  # the stage's precision
    classes = [c["class_path"] for c in trainer["callbacks"]]
    assert classes[0] == "dawn_train.stages.callbacks.Throughput"  # the stage's callbacks are kept
    assert classes[-1] == "dawn_train.launch.callbacks.ScaleReport" and classes.count(classes[-1]) == 1
    assert config["checkpoint"]["dirpath"] == "runs/lfg-demo/checkpoints"
    if preset.startswith("deepspeed"):
        assert trainer["strategy"]["init_args"]["stage"] == int(preset.split("_")[2])
    if preset.endswith("offload"):
        assert trainer["strategy"]["init_args"]["offload_optimizer"] and trainer["strategy"]["init_args"]["offload_parameters"]


def test_activation_checkpointing_keeps_state_dict_names():
    from dawn_train.models.lfg import LatentFlowGenerator

    torch.manual_seed(0)
    model = LatentFlowGenerator(num_regions=4, region_predictor_params={"block_expansion": 8, "max_features": 32, "num_blocks": 2},
                                bg_predictor_params={"block_expansion": 8, "max_features": 32, "num_blocks": 2},
                                generator_params={"block_expansion": 8, "max_features": 32, "num_bottleneck_blocks": 1,
                                                  "pixelwise_flow_predictor_params": {"block_expansion": 8, "max_features": 32,
                                                                                      "num_blocks": 2}})
    before = model.state_dict()
    x = torch.rand(1, 3, 64, 64)
    reference = model(x, x)["prediction"]
    assert apply_activation_checkpointing(model, ["DownBlock2d", "dawn_train.models.lfg.blocks.UpBlock2d"]) > 0
    assert list(model.state_dict()) == list(before)
    out = model(x, x)["prediction"]
    torch.testing.assert_close(out, reference)
    out.mean().backward()
    with pytest.raises(ValueError, match="NoSuchBlock"):
        apply_activation_checkpointing(model, ["NoSuchBlock"])


def _ranks(run_dir):
    return [json.loads((run_dir / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_two_cpu_processes_see_equal_batches(synth_shards, tmp_path):
    run = tmp_path / "ddp"
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, run, max_steps=6, every_n=3, validate=True)
    run_dawn(["fit", "-c", str(config), "--trainer.devices", "2", "--trainer.strategy", "ddp",
              "--trainer.callbacks+=dawn_train.launch.callbacks.ScaleReport"], timeout=300)
    ranks = _ranks(run)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["train_batches"] == ranks[1]["train_batches"] == 6
    assert ranks[0]["val_batches"] == ranks[1]["val_batches"] == 1
    rows = csv_rows(run)
    assert {float(r["effective_batch_size"]) for r in rows if r.get("effective_batch_size")} == {8.0}  # 4 x 2 x 1 x 1


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_on_cpu_trains_resumes_and_exports(stage, synth_shards, tmp_path):
    run = tmp_path / f"zero{stage}"
    common = [*preset_args("deepspeed_stage_%d" % stage), "--trainer.accelerator", "cpu",
              "--trainer.precision", "32-true", "--trainer.devices", "2"]
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, run, max_steps=4, every_n=4)
    start = time.perf_counter()
    run_dawn(["fit", "-c", str(config), *common], timeout=420)
    first = time.perf_counter() - start
    last = run / "checkpoints" / "last.ckpt"
    assert (last / "latest").is_file(), "DeepSpeed saves a checkpoint directory"
    assert all(r["global_step"] == 4 for r in _ranks(run))

    # resume: same run, more steps; the global step continues from 4
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, run, max_steps=6, every_n=2)
    proc = run_dawn(["fit", "-c", str(config), *common, "--ckpt_path", "last"], timeout=240,
                    retry_restoring=run)
    assert "Restored all states" in proc.stdout + proc.stderr
    for rank in _ranks(run):
        assert rank["global_step"] == 6 and rank["train_batches"] == 2

    out = tmp_path / "lfg.pt"
    proc = run_dawn(["export", str(last), "--kind", "lfg", "--out", str(out)], timeout=180)
    assert "exported lfg" in proc.stdout
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["dawn_train"]["kind"] == "lfg" and all(v.dtype == torch.float32 for v in raw["state_dict"].values()
                                                       if v.is_floating_point())
    model = checkpoints.load_model(out, "lfg")  # no DeepSpeed involved
    assert type(model).__name__ == "LatentFlowGenerator"
    print(f"[timing] ZeRO-{stage}: first fit {first:.0f} s")
