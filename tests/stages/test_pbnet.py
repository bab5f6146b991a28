"""dawn_train.stages.pbnet: PBNetStage (losses, schedules, normalisation, GAN updates), the demo
configs end to end through the CLI, checkpoints and official-file conversion."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dawn_train import checkpoints
from dawn_train.models.pbnet import POSE_MAX, POSE_MIN, PBNet
from dawn_train.models.pbnet.units import pose_range
from dawn_train.stages.pbnet import PBNetStage, SequenceDiscriminator, plot_curves

REPO = Path(__file__).resolve().parents[2]
TINY = dict(audio_dim=80, pose_latent_dim=8, audio_latent_dim=8, ff_size=16, num_layers=1, num_heads=2, dim_head=8,
            max_len=1000)


def tiny_stage(target: str = "pose", **kw) -> PBNetStage:
    torch.manual_seed(0)
    dims = dict(pos_dim=6, eye_dim=0) if target == "pose" else dict(pos_dim=0, eye_dim=2)
    return PBNetStage(PBNet(**dims, **TINY), target=target, crop_size=64, **kw)


def fake_batch(b: int = 3, t: int = 40, lengths=(40, 30, 40)) -> dict:
    g = torch.Generator().manual_seed(0)
    pose = torch.stack([torch.full((b, t), 5.0), torch.zeros(b, t), torch.zeros(b, t), torch.full((b, t), 0.65),
                        torch.full((b, t), 32.0), torch.full((b, t), 33.0)], -1) + torch.randn(b, t, 6, generator=g)
    return {"pose": pose, "blink": 0.3 + 0.01 * torch.randn(b, t, 2, generator=g),
            "audio_feat": torch.randn(b, t, 80, generator=g), "length": torch.tensor(lengths)}


# ---- fast unit tests ---------------------------------------------------------------------------

def test_pose_range_presets_and_override():
    assert pose_range("official") == (POSE_MIN, POSE_MAX)
    lo, hi = pose_range("crop", crop_size=64)
    assert lo[:3] == POSE_MIN[:3] and hi[:3] == POSE_MAX[:3] and hi[3:] == (1.0, 64.0, 64.0)
    assert pose_range("crop", pose_min=(0,) * 6, pose_max=(1,) * 6) == ((0.0,) * 6, (1.0,) * 6)
    with pytest.raises(ValueError, match="together"):
        pose_range(pose_min=(0,) * 6)
    with pytest.raises(ValueError, match="pose_norm"):
        pose_range("3ddfa")


def test_target_must_match_model_dims():
    with pytest.raises(ValueError, match="target 'blink' needs"):
        PBNetStage(PBNet(pos_dim=6, eye_dim=0, **TINY), target="blink")


def test_kl_warmup_schedule():
    stage = tiny_stage(kl_weight=0.004, kl_delay_steps=10, kl_warmup_steps=20)
    assert stage.kl_weight_at(0) == stage.kl_weight_at(9) == 0.0
    assert stage.kl_weight_at(10) == pytest.approx(0.004 / 20)
    assert stage.kl_weight_at(19) == pytest.approx(0.002)
    assert stage.kl_weight_at(29) == stage.kl_weight_at(10_000) == pytest.approx(0.004)
    assert tiny_stage(kl_warmup_steps=0).kl_weight_at(0) == 0.004  # no warm-up: official weight from step 0


@pytest.mark.parametrize("target", ["pose", "blink"])
def test_losses_mask_padding_and_reach_the_model(target):
    stage = tiny_stage(target, kl_warmup_steps=0, smoothness="match")
    batch = fake_batch()
    x, audio, mask = stage.inputs(batch)
    assert x.shape == (3, 40, 6 if target == "pose" else 2) and (x[1, 30:] == 0).all()
    if target == "pose":  # normalised with the crop ranges: yaw 5 deg -> (5 + 90) / 180, tx 32 px -> 0.5
        assert abs(float(x[0, :, 0].mean()) - 95 / 180) < 0.01 and abs(float(x[0, :, 4].mean()) - 0.5) < 0.05
    terms, out = stage.losses(x, audio, mask, step=0)
    assert set(terms) >= {"rc", "kl", "smooth", "loss", "kl_weight"}
    torch.testing.assert_close(terms["loss"], terms["rc"] + 0.004 * terms["kl"] + 5e-4 * terms["smooth"])
    terms["loss"].backward()
    for name in ("encoder.mu_layer.weight", "decoder.finallayer.weight", "decoder.time_rel_pos_bias_mem."
                 "relative_attention_bias.weight"):
        assert stage.model.get_parameter(name).grad.abs().sum() > 0, name
    # padded frames do not change the loss
    batch2 = fake_batch()
    batch2["pose"][1, 30:] += 100.0
    batch2["blink"][1, 30:] += 1.0
    stage.eval()
    rc = []
    for each in (batch, batch2):
        torch.manual_seed(0)  # same posterior noise
        rc.append(stage.losses(*stage.inputs(each), step=0)[0]["rc"])
    a, b = rc
    torch.testing.assert_close(a, b)


def test_target_scale_prior_and_bias_lr_options():
    """target_scale multiplies the model units (and round-trips), prior_rho reaches the KL, and
    rel_bias_lr_mult puts the relative-position bias tables in their own AdamW group; defaults are official."""
    official = tiny_stage("blink")
    assert len(official.param_groups()) == 1 and official.hparams.prior_rho == 0.0
    stage = tiny_stage("blink", target_scale=10.0, prior_rho=0.9, rel_bias_lr_mult=5.0, lr=1e-3, kl_warmup_steps=0)
    batch = fake_batch()
    x, audio, mask = stage.inputs(batch)
    torch.testing.assert_close(x[0], 10.0 * batch["blink"][0])
    torch.testing.assert_close(stage.to_data_units(x[0]), batch["blink"][0])
    terms, _ = stage.losses(x, audio, mask, step=0)
    terms_white, _ = tiny_stage("blink", target_scale=10.0, kl_warmup_steps=0).losses(x, audio, mask, step=0)
    assert not torch.allclose(terms["kl"], terms_white["kl"])  # AR(1) prior, not N(0, I)
    rest, bias = stage.param_groups()
    assert bias["lr"] == pytest.approx(5e-3) and len(bias["params"]) == 2  # tgt and mem tables
    assert len(rest["params"]) + 2 == len(list(stage.model.parameters()))
    pose = tiny_stage("pose", target_scale=2.0)
    xp, _, _ = pose.inputs(batch)
    torch.testing.assert_close(pose.to_data_units(xp[0]), batch["pose"][0], rtol=1e-5, atol=1e-4)
    for bad in (dict(prior_rho=1.0), dict(prior_rho=-0.1), dict(target_scale=0.0), dict(rel_bias_lr_mult=0.0)):
        with pytest.raises(ValueError):
            tiny_stage(**bad)


def test_audio_scaling_is_applied():
    stage = tiny_stage(audio_mean=-8.0, audio_std=4.0)
    batch = fake_batch()
    _, audio, _ = stage.inputs(batch)
    torch.testing.assert_close(audio, (batch["audio_feat"] + 8.0) / 4.0)


def test_discriminator_shapes():
    d = SequenceDiscriminator(6)
    assert d(torch.randn(2, 200, 6)).shape == (2, 23)  # official 1-D PatchGAN: 200 -> 100 -> 50 -> 25 -> 24 -> 23
    assert d(torch.randn(2, 48, 6)).ndim == 2


def test_audio_features_of_another_size_are_named_before_the_first_step(synth_shards, tmp_path):
    """A PBNet for HuBERT (1024-d) on log-mel shards (80-d): the sizes and the setting, not a matmul shape error."""
    import lightning as L

    from dawn_train.data.datamodule import PBNetDataModule

    torch.manual_seed(0)
    stage = PBNetStage(PBNet(**{**TINY, "audio_dim": 1024}), target="pose", crop_size=64)
    data = PBNetDataModule(str(synth_shards), window=20, batch_size=2, num_workers=0)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"80-d \(logmel, .*manifest.json\), the PBNet takes 1024-d: set "
                                         r"model.init_args.model.init_args.audio_dim: 80"):
        trainer.fit(stage, datamodule=data)
    assert trainer.global_step == 0


def test_validation_draws_its_noise_from_its_own_generators(synth_shards, tmp_path):
    """Validation's posterior and prior samples come from generators of their own: with the global RNG, the number of
    validation clips changed every later training step's noise (a PBNet validated on 8 clips trained unlike one
    validated on 4).  Its figures do not depend on the global state either."""
    import lightning as L

    from dawn_train.data.datamodule import PBNetDataModule

    stage = tiny_stage("pose")
    data = PBNetDataModule(str(synth_shards), window=20, batch_size=1, num_workers=0)

    def validate(seed: int, batches: int) -> tuple[dict, torch.Tensor]:
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=batches, default_root_dir=tmp_path)
        torch.manual_seed(seed)
        figures = trainer.validate(stage, datamodule=data, verbose=False)[0]
        return figures, torch.get_rng_state()

    (one, after_one), (two, after_two), (two_again, _) = validate(0, 1), validate(0, 2), validate(1, 2)
    assert torch.equal(after_one, after_two)  # the global RNG moves as much whatever the number of clips
    assert two == two_again and "val/kl" in two
    assert one != two  # the second clip counts in the figures


def test_plot_curves_is_an_image():
    t = np.linspace(0, 4, 100)
    image = plot_curves(np.stack([np.sin(t), np.cos(t)], 1), np.stack([np.sin(t + 0.3), np.cos(t)], 1), ("l", "r"),
                        reconstruction=np.zeros((100, 2)), title="blink")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.std() > 0


def test_convert_official_pbnet_files(tmp_path, official_shapes):
    """A raw state dict with the official names/shapes (random values) converts and loads strictly."""
    g = torch.Generator().manual_seed(0)
    for kind, key in (("pbnet-pose", "pbnet_pose"), ("pbnet-blink", "pbnet_blink")):
        shapes = official_shapes[key]["state_dict"]
        raw = {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}
        src, out = tmp_path / f"{key}.pth.tar", tmp_path / f"{key}.pt"
        torch.save(raw, src)
        summary = checkpoints.convert_official(kind, src, out)
        assert summary["tensors"] == len(shapes)
        official = 2_347_018 if kind == "pbnet-pose" else 2_345_990  # counts rotary freqs as parameters
        assert abs(summary["parameters"] - official) <= 16, summary
        model = checkpoints.load_model(out, kind)
        for name, value in model.state_dict().items():
            assert torch.equal(value, raw[name]), name
        # the official file itself loads too (raw state dict, release architecture)
        assert torch.equal(checkpoints.load_model(src, kind).decoder.finallayer.weight, raw["decoder.finallayer.weight"])
    bad = dict(raw)
    bad.pop("decoder.finallayer.bias")
    torch.save(bad, tmp_path / "bad.pth.tar")
    with pytest.raises(checkpoints.CheckpointError, match="1 missing"):
        checkpoints.convert_official("pbnet-blink", tmp_path / "bad.pth.tar", tmp_path / "bad.pt")


# ---- end to end on synthetic shards --------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """6 synthetic videos of 6 s (150 frames), 64 px: 100-frame windows exist."""
    from dawn_train.data.shards import write_shards
    from dawn_train.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("pbnet")
    synth_dataset(root / "raw", videos=6, seconds=6.0, size=64, seed=5, workers=1, progress=False)
    write_shards(root / "raw", root / "shards", val_fraction=0.34, samples_per_shard=1, progress=False)
    return root / "shards"


DEMO_PBNET = [str(REPO / "experiments" / name) for name in ("base.yaml", "demo/base.yaml", "demo/pbnet.yaml")]


def demo_config(target: str, shards: Path, out: Path, **overrides) -> list[Path]:
    """The demo recipe's config files of `target` (blink: demo/pbnet_blink.yaml after demo/pbnet.yaml), then an
    overlay (see `fit`): the run at `out/pbnet-<target>`, `overrides`."""
    config: dict = {"run": {"root": str(out), "name": f"pbnet-{target}"},
                    "trainer": {"enable_progress_bar": False},
                    "model": {"init_args": {}},
                    "data": {"init_args": {"shards": str(shards), "num_workers": 0}}}
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        (config[section] if section == "trainer" else config[section]["init_args"])[name] = value
    path = out / f"pbnet_{target}.yaml"
    path.write_text(yaml.safe_dump(config))
    return [REPO / "experiments" / "demo" / "pbnet_blink.yaml", path] if target == "blink" else [path]


def fit(configs: list[Path]):
    """`dawn-train fit -c experiments/base.yaml -c demo/base.yaml -c demo/pbnet.yaml -c <configs>` in-process;
    closes the W&B run so the next fit starts its own."""
    import wandb

    from dawn_train.stages.cli import run_lightning_cli

    try:
        return run_lightning_cli(["fit", *(w for f in [*DEMO_PBNET, *map(str, configs)] for w in ("-c", f))])
    finally:
        wandb.finish()


def read_metrics(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["pose", "blink"])
def test_demo_config_trains_logs_and_round_trips(target, shards, tmp_path):
    """`dawn-train fit -c experiments/base.yaml -c demo/base.yaml -c demo/pbnet.yaml`: the loss falls, validation
    logs the sample statistics and a curve plot to W&B, and last.ckpt rebuilds the same model."""
    from dawn_train.tracking import read_offline_run

    torch.set_num_threads(1)
    config = demo_config(target, shards, tmp_path)
    cli = fit(config)
    run = tmp_path / f"pbnet-{target}"
    rows = read_metrics(run)
    rc = column(rows, "train/rc")
    assert len(rc) >= 10
    assert np.mean(rc[-3:]) < 0.5 * np.mean(rc[:3]), rc  # falls by more than 2x
    for key in ("val/rc", "val/kl", "val/step_ratio", "val/std_sample/" + ("yaw" if target == "pose" else "left")):
        assert column(rows, key), key
    if target == "blink":
        assert column(rows, "val/blink_rate_data")[-1] > 0 and column(rows, "val/blink_rate_sample")
    assert column(rows, "train/kl_weight")[0] == 0.0 and column(rows, "train/kl_weight")[-1] > 0
    assert any(f"{target}_curves" in m for m in read_offline_run(run)["media"])

    loaded = checkpoints.load_model(run / "checkpoints" / "last.ckpt", f"pbnet-{target}").eval()
    trained = cli.model.model.eval()
    x0, audio = torch.rand(1, 1, trained.feature_dim), torch.randn(1, 250, 80)
    torch.testing.assert_close(loaded.generate(x0, audio, seed=1), trained.generate(x0, audio, seed=1))


@pytest.mark.slow
def test_sampler_from_lightning_checkpoints(shards, tmp_path):
    """PoseBlinkSampler.from_checkpoints reads the units (pose ranges, target scale, audio scaling) and the
    latent prior from the .ckpt files."""
    from dawn_train.inference.pose_blink import PoseBlinkSampler

    torch.set_num_threads(1)
    short = {"trainer.max_steps": 4, "trainer.val_check_interval": 4}
    fit(demo_config("pose", shards, tmp_path, **short))
    fit(demo_config("blink", shards, tmp_path, **short, **{"model.target_scale": 5.0, "model.prior_rho": 0.8}))
    ckpt = lambda t: tmp_path / f"pbnet-{t}" / "checkpoints" / "last.ckpt"  # noqa: E731
    sampler = PoseBlinkSampler.from_checkpoints(ckpt("pose"), ckpt("blink"))
    assert sampler.pose_units.pose_max == (20.0, 8.0, 6.0, 0.70, 35.0, 35.5)  # demo/pbnet.yaml's ranges
    assert (sampler.pose_units.audio_mean, sampler.blink_units.audio_std) == (-8.6, 3.8)
    assert (sampler.pose_units.scale, sampler.pose_units.prior_rho) == (1.0, 0.9)
    assert (sampler.blink_units.scale, sampler.blink_units.prior_rho) == (5.0, 0.8)  # the overrides, last
    pose, blink = sampler(np.random.randn(300, 80) * 3.8 - 8.6, np.array([0, 0, 0, 0.66, 32, 33]),
                          np.array([0.3, 0.3]), seed=0)
    assert pose.shape == (300, 6) and blink.shape == (300, 2) and torch.isfinite(pose).all()
    assert abs(float(pose[:, 4].mean()) - 32) < 16  # pixels, not normalised units
    assert abs(float(blink.mean()) - 0.3) < 0.2  # raw openness, not x target_scale
    with pytest.raises(checkpoints.CheckpointError, match="holds a 'pbnet-blink' checkpoint, expected 'pbnet-pose'"):
        PoseBlinkSampler.from_checkpoints(ckpt("blink"), ckpt("blink"))


@pytest.mark.slow
def test_discriminator_alternates_and_both_optimizers_step(shards, tmp_path):
    """gan_weight > 0: manual optimisation, one D step and one CVAE step per batch."""
    torch.set_num_threads(1)
    config = demo_config("pose", shards, tmp_path, **{"model.gan_weight": 0.1, "trainer.max_steps": 6,
                                                        "trainer.val_check_interval": 3,
                                                        "trainer.log_every_n_steps": 1})
    cli = fit(config)
    stage = cli.model
    assert not stage.automatic_optimization
    opt_g, opt_d = (o.optimizer for o in stage.optimizers())
    steps = [int(next(iter(o.state.values()))["step"]) for o in (opt_g, opt_d)]
    assert steps == [3, 3], steps  # max_steps counts both optimizers: 3 batches
    rows = read_metrics(tmp_path / "pbnet-pose")
    assert column(rows, "train/d_loss") and column(rows, "train/g_loss")
    # the discriminator is not part of the model checkpoint format
    loaded = checkpoints.load_model(tmp_path / "pbnet-pose" / "checkpoints" / "last.ckpt", "pbnet-pose")
    assert not any(k.startswith("discriminator") for k in loaded.state_dict())
