"""A2V-FDM stage: curriculum stages 1 and 2 train on synthetic shards, EMA, sampling, checkpoints,
official weights."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dawn_train import checkpoints
from dawn_train.cli import main
from dawn_train.inference.pipeline import load_a2v
from dawn_train.models.a2v import build_a2v
from dawn_train.models.a2v.conditioning import face_box_vector, latent_motion, latent_target, mouth_mask
from dawn_train.stages.a2v import A2VStage
from dawn_train.stages.ema import EMA
from dawn_train.tracking import read_offline_run

REPO = Path(__file__).resolve().parents[2]
STAGE1 = [w for name in ("base", "demo/base", "demo/a2v_stage1")
          for w in ("-c", str(REPO / "experiments" / f"{name}.yaml"))]
STAGE2 = [*STAGE1, "-c", str(REPO / "experiments" / "demo" / "a2v_stage2.yaml")]
TINY_A2V = dict(dim=8, dim_mults=(1, 2), ref_channels=32, cond_aud=80, attn_heads=2, attn_dim_head=8,
                init_kernel_size=3, resnet_groups=4, sampling_timesteps=2)
# CLI overrides giving the same tiny UNet and a loss that is not dominated by timestep noise
TINY_ARGS = [f"--model.init_args.model.init_args.{k}={list(v) if isinstance(v, tuple) else v}"
             for k, v in TINY_A2V.items() if k != "sampling_timesteps"]
FAST_ARGS = ["--model.init_args.timestep_range=[200, 800]", "--model.init_args.lr=2e-3",
             "--model.init_args.ema_decay=0.9", "--model.init_args.sample_steps=2", "--trainer.log_every_n_steps=1",
             "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1", "--data.init_args.batch_size=2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is faster


def make_tiny_lfg(raw_dir: Path, out: Path, steps: int = 4) -> Path:
    """The demo LFG architecture (experiments/demo/lfg.yaml), trained a few L1 steps on synthetic frames and
    saved as a converted checkpoint."""
    from dawn_train.data.video import decode_all

    config = yaml.safe_load((REPO / "experiments" / "demo" / "lfg.yaml").read_text())["model"]["init_args"]["model"]
    torch.manual_seed(0)
    model = checkpoints.build(config)
    frames = np.concatenate([decode_all(p.read_bytes())[::10] for p in sorted(Path(raw_dir).glob("*.mp4"))[:2]])
    frames = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        source, driving = frames[step::steps][:4], frames[(step + 1) % steps::steps][:4]
        n = min(len(source), len(driving))
        loss = (model(source[:n], driving[:n])["prediction"] - driving[:n]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return checkpoints.save_converted(model.eval(), config, "lfg", out)


def make_tiny_probe(out: Path, steps: int = 5) -> Path:
    """A briefly trained synthetic probe of a tiny architecture: wiring, not accuracy (that is
    tests/metrics/test_synthetic.py's)."""
    from dawn_train.metrics.synthetic import Augment, ProbeConfig, train_probe

    tiny = ProbeConfig(coarse_channels=(8, 8, 8, 8), face_crop=32, face_channels=(8, 8, 8, 8, 8, 8),
                       eye_channels=(8, 8, 8, 8), eye_hidden=8, mouth_channels=(8, 8, 8, 8), mouth_hidden=8, hidden=16)
    train_probe(out, steps=steps, batch_size=8, config=tiny, eval_videos=0,
                augment=Augment(large_fraction=0.0, mp4_fraction=0.0, blur_fraction=0.0))
    return out


@pytest.fixture(scope="module")
def lfg_ckpt(synth_raw, tmp_path_factory) -> Path:
    return make_tiny_lfg(synth_raw, tmp_path_factory.mktemp("lfg") / "lfg.pt")


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def series(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def falls(values: list[float], factor: float = 0.9) -> tuple[bool, float, float]:
    third = len(values) // 3
    first, last = np.mean(values[:third]), np.mean(values[-third:])
    return last < factor * first, float(first), float(last)


def fit(argv: list[str], cwd: Path) -> None:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        main(argv)
    finally:
        os.chdir(old)
        import wandb

        wandb.finish()  # the next fit in this process starts its own W&B run


@pytest.fixture(scope="module")
def stage1_run(synth_shards, lfg_ckpt, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("a2v")
    probe = make_tiny_probe(work / "probe.pt")
    fit(["fit", *STAGE1, f"--model.init_args.probe={probe}", f"--data.init_args.shards={synth_shards}",
         f"--model.init_args.lfg_checkpoint={lfg_ckpt}",
         "--trainer.max_steps=21", "--trainer.val_check_interval=21", "--data.init_args.clip_len=4", *TINY_ARGS,
         *FAST_ARGS], work)
    return work / "runs" / "a2v-demo-stage1"


# the graphs torch.compile hands to its backend during stage 2 (`compile_backend`), and how often they ran: a real
# backend that records them and runs them as they are (inductor's code generation: tests/models/a2v/test_compiled.py)
COMPILED_GRAPHS: list[int] = []
GRAPH_RUNS: list[int] = []


def recording_backend(gm: torch.fx.GraphModule, example_inputs):
    COMPILED_GRAPHS.append(len(gm.graph.nodes))

    def run(*args):
        GRAPH_RUNS.append(1)
        return gm.forward(*args)
    return run


torch._dynamo.register_backend(recording_backend, name="dawn_test_recording")


@pytest.fixture(scope="module")
def stage2_run(stage1_run, synth_shards, lfg_ckpt) -> Path:
    work = stage1_run.parent.parent
    torch._dynamo.reset()
    fit(["fit", *STAGE2, "--model.init_args.compile_backend=dawn_test_recording", f"--data.init_args.shards={synth_shards}",
         f"--model.init_args.lfg_checkpoint={lfg_ckpt}", f"--model.init_args.init_from={stage1_run}/checkpoints/last.ckpt",
         "--trainer.max_steps=15", "--trainer.val_check_interval=15", "--data.init_args.clip_len=4",
         "--data.init_args.clip_len_max=8", "--data.init_args.val_clip_len=6", *TINY_ARGS, *FAST_ARGS], work)
    return work / "runs" / "a2v-demo-stage2"


# ---- end to end (demo configs through the CLI) -----------------------------------------------------
@pytest.mark.slow
def test_stage1_loss_falls_and_logs_video(stage1_run):
    rows = metrics(stage1_run)
    ok, first, last = falls(series(rows, "train/loss_diffusion"))
    assert ok, f"stage-1 diffusion loss did not fall: {first:.3f} -> {last:.3f}"
    assert {"train/loss_flow", "train/loss_mouth", "val/loss", "val/loss_mouth", "val/Blink/s", "val/synth/PSNR",
            "val/synth_still/PSNR"} <= set(rows[0])
    # lip sync needs clips of 2 x 5 + 3 frames for its offset search: on 4-frame clips it is n/a, not logged as 0
    assert "val/synth/MouthCorr" not in rows[0]
    # the configured Table 1 metrics are logged each validation epoch (BAS needs head-motion beats,
    # which 4-frame clips do not have: it is left out rather than logged as 0)
    # Blink/s measured by the probe on the generated frames; every synthetic figure has its still-frame twin
    assert series(rows, "val/Blink/s") and not series(rows, "val/BAS")
    assert series(rows, "val/synth/PSNR") and series(rows, "val/synth_still/PSNR")
    assert set(series(rows, "train/clip_len")) == {4.0}
    run = read_offline_run(stage1_run)
    assert any(p.endswith(".mp4") for p in run["media"]) and any(p.endswith(".png") for p in run["media"])
    import decord

    (sample,) = (stage1_run / "samples").glob("val_step*.mp4")
    assert len(decord.VideoReader(str(sample))) == 4  # the validation clip length


@pytest.mark.slow
def test_stage1_checkpoint_holds_ema_not_lfg(stage1_run):
    path = stage1_run / "checkpoints" / "last.ckpt"
    raw = torch.load(path, map_location="cpu", weights_only=False)
    keys = raw["state_dict"].keys()
    assert not any(k.startswith("lfg.") for k in keys)
    assert any(k.startswith("ema.model.") for k in keys) and any(k.startswith("model.") for k in keys)
    info = raw["dawn_a2v"]
    assert info["image_size"] == 64 and info["audio_feature"]["type"] == "logmel" and len(info["face_box_mean"]) == 4
    assert int(raw["state_dict"]["ema.step"]) == 21  # one EMA update per optimizer step
    # EMA weights differ from the raw weights, and generation loads the EMA ones
    name = "diffusion.denoise_fn.init_conv.weight"
    ema, raw_w = raw["state_dict"][f"ema.model.{name}"], raw["state_dict"][f"model.{name}"]
    assert not torch.equal(ema, raw_w)
    model, meta = load_a2v(path)
    assert meta.ema and torch.equal(model.state_dict()[name], ema)
    # generate and eval condition as training did: the demo's log-mel standardisation is in the record
    assert info["condition"] == meta.condition == {"pose_scale": None, "audio_norm": [-8.6, 3.8],
                                                    "blink_scale": 1.0, "motion_shift": 0.0}
    assert torch.equal(checkpoints.load_model(path, "a2v").state_dict()[name], raw_w)
    # a resume restores every weight strictly although the frozen LFG is not in the file
    stage = A2VStage(checkpoints.build(raw["hyper_parameters"]["model"]),
                     lfg_checkpoint=raw["hyper_parameters"]["lfg_checkpoint"])
    stage.on_load_checkpoint(raw)
    stage.load_state_dict(raw["state_dict"], strict=True)
    assert torch.equal(stage.ema.model.state_dict()[name], ema) and int(stage.ema.step) == 21


@pytest.mark.slow
def test_stage2_resumes_from_stage1_weights_and_loss_falls(stage1_run, stage2_run):
    rows = metrics(stage2_run)
    ok, first, last = falls(series(rows, "train/loss_diffusion"))
    assert ok, f"stage-2 diffusion loss did not fall: {first:.3f} -> {last:.3f}"
    lengths = set(series(rows, "train/clip_len"))
    assert len(lengths) > 1 and lengths <= {4.0, 5.0, 6.0, 7.0, 8.0}  # L drawn per batch in [4, 8]
    # stage 2 started where stage 1 ended: its first losses are far below stage 1's first ones
    assert np.mean(series(rows, "train/loss_diffusion")[:3]) < np.mean(series(metrics(stage1_run),
                                                                               "train/loss_diffusion")[:3])
    raw = torch.load(stage2_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert raw["hyper_parameters"]["curriculum_stage"] == 2 and raw["global_step"] == 15
    # every one of its 15 training steps ran the UNet through torch.compile's graphs (clip lengths varying: not one
    # fell back to eager); validation stays eager
    assert COMPILED_GRAPHS, "stage 2 was fitted with compile_backend, but no graph reached the backend"
    assert len(GRAPH_RUNS) >= 15, f"{len(GRAPH_RUNS)} compiled UNet calls in 15 training steps"


# ---- unit level (one stage object, no Trainer) ---------------------------------------------------
def fake_batch(b: int = 2, length: int = 5, size: int = 64, feat: int = 80, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor([16.0, 12.0, 48.0, 56.0]).expand(b, 4)
    lmk = torch.tensor([[26.0, 44.0], [38.0, 44.0], [32.0, 40.0], [32.0, 48.0]]).expand(b, length, 4, 2)
    return {"frames": torch.randint(0, 255, (b, length, 3, size, size), generator=g, dtype=torch.uint8),
            "ref_frame": torch.randint(0, 255, (b, 3, size, size), generator=g, dtype=torch.uint8),
            "audio_feat": torch.randn(b, length, feat, generator=g), "pose": torch.randn(b, length, 6, generator=g),
            "blink": torch.rand(b, length, 2, generator=g), "face_box": box[:, None].expand(b, length, 4),
            "mouth_lmk": lmk.clone(), "ref_pose": torch.randn(b, 6, generator=g), "ref_blink": torch.rand(b, 2, generator=g),
            "ref_face_box": box.clone()}


@pytest.fixture(scope="module")
def stage(lfg_ckpt) -> A2VStage:
    torch.manual_seed(0)
    return A2VStage(build_a2v(**TINY_A2V), lfg_checkpoint=str(lfg_ckpt), ema_decay=0.5, sample_steps=2)


def test_lfg_is_frozen_and_outside_the_optimizer(stage):
    stage.train()
    assert not stage.lfg.training and not stage.ema.model.training
    assert not any(p.requires_grad for p in stage.lfg.parameters())
    trainable = {id(p) for p in stage.model.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in stage.lfg.parameters()}
    # the unused head cross-attentions are frozen (DDP), the face-location encoder trains
    unet = stage.model.unet
    assert not unet.final_conv[0].cross_attn_aud.to_q.weight.requires_grad
    assert stage.model.face_loc_emb.conv1.weight.requires_grad


@pytest.mark.parametrize("length", [3, 7])
def test_dynamic_frame_counts(stage, length):
    inputs = stage.prepare(fake_batch(length=length))
    assert inputs["x_start"].shape == (2, 3, length, 16, 16) and inputs["cond"].shape == (2, length, 88)
    assert inputs["mouth"].shape == (2, length, 16, 16) and inputs["mouth"].sum() > 0
    losses = stage.losses(inputs, stage.model)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    out = stage.sample(inputs, steps=2)
    assert out["video"].shape == (1, length, 3, 64, 64) and out["x0"].shape == (1, 3, length, 16, 16)


def test_ddim_sampling_is_deterministic_for_a_seed(stage):
    inputs = stage.prepare(fake_batch(length=4))
    a, b = stage.sample(inputs, seed=3), stage.sample(inputs, seed=3)
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    c = stage.sample(inputs, seed=4)
    assert (a["x0"] - c["x0"]).abs().max() > 1e-3


def test_ema_differs_from_raw_and_is_used_for_sampling(lfg_ckpt):
    torch.manual_seed(0)
    stage = A2VStage(build_a2v(**TINY_A2V), lfg_checkpoint=str(lfg_ckpt), ema_decay=0.9, ema_warmup=False,
                     sample_steps=2)
    with torch.no_grad():
        for p in stage.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    stage.ema.update(stage.model)
    raw, ema = stage.model.unet.init_conv.weight, stage.ema.model.unet.init_conv.weight
    assert not torch.equal(raw, ema) and int(stage.ema.step) == 1
    assert stage.sampling_model is stage.ema.model
    inputs = stage.prepare(fake_batch(length=3))
    default, with_ema = stage.sample(inputs, seed=1), stage.sample(inputs, seed=1, model=stage.ema.model)
    with_raw = stage.sample(inputs, seed=1, model=stage.model)
    torch.testing.assert_close(default["x0"], with_ema["x0"], rtol=0, atol=0)
    assert (default["x0"] - with_raw["x0"]).abs().max() > 1e-4


def test_ema_update_rule():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9, warmup=True)
    target = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    decay = min(0.9, 2 / 11)  # warm-up at the first update
    torch.testing.assert_close(ema.model.weight, target["weight"] + (1 - decay) * 1.0)
    with pytest.raises(ValueError):
        EMA(model, decay=1.5)


def test_condition_helpers():
    flow, occ = torch.rand(2, 3, 4, 4, 2) * 2 - 1, torch.rand(2, 3, 1, 4, 4)
    x = latent_target(flow, occ)
    assert x.shape == (2, 3, 3, 4, 4)
    back_flow, back_occ = latent_motion(x)
    torch.testing.assert_close(back_flow, flow)
    torch.testing.assert_close(back_occ, occ)
    box = face_box_vector(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), height=48, width=64)
    assert box.tolist() == [[10.0, 30.0, 20.0, 40.0, 64.0, 48.0]]  # x by the width, y by the height
    mask = mouth_mask(torch.tensor([[[[16.0, 32.0], [31.0, 40.0]]]]), 64, 64, 16)  # box x 4..7(+1), y 8..10(+1)
    assert mask.shape == (1, 1, 16, 16)
    rows, cols = mask[0, 0].nonzero().T
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 11, 4, 8)


def test_stage_rejects_bad_settings(lfg_ckpt):
    with pytest.raises(ValueError, match="curriculum_stage"):
        A2VStage(build_a2v(**TINY_A2V), lfg_checkpoint=str(lfg_ckpt), curriculum_stage=3)
    for std in (0.0, -1.0):
        with pytest.raises(ValueError, match="audio_std"):
            A2VStage(build_a2v(**TINY_A2V), lfg_checkpoint=str(lfg_ckpt), audio_std=std)
    stage = A2VStage(build_a2v(**{**TINY_A2V, "ref_channels": 256}), lfg_checkpoint=str(lfg_ckpt))
    with pytest.raises(ValueError, match="ref_channels"):
        stage.prepare(fake_batch(length=2))


# ---- official weights ----------------------------------------------------------------------------
def test_official_a2v_converts_loads_into_stage_and_exports(official_shapes, lfg_ckpt, tmp_path):
    generator = torch.Generator().manual_seed(0)
    diffusion = {k: torch.randn(shape, generator=generator) for k, shape in official_shapes["a2v128"]["diffusion"].items()}
    freqs = 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32)  # one shared RoPE table, stored under every layer
    diffusion.update({k: freqs.clone() for k in diffusion if k.endswith("rotary_emb.freqs")})
    source = tmp_path / "DAWN_128.pth"
    torch.save({"diffusion": diffusion, "optimizer_diff": {}, "example": 7}, source)
    summary = checkpoints.convert_official("a2v", source, tmp_path / "a2v.pt")
    assert summary["parameters"] == 49_857_555 + 1_248  # UNet (incl. 16 rotary freqs) + face-location encoder
    model = checkpoints.load_model(tmp_path / "a2v.pt", "a2v")
    exported = checkpoints.export_official(model, "a2v")["diffusion"]
    assert list(exported) == list(diffusion)
    assert all(torch.equal(exported[k], diffusion[k]) for k in diffusion)
    # init_from with the official file: strict load of every tensor, EMA starts from the same weights
    stage = A2VStage(build_a2v(), lfg_checkpoint=str(lfg_ckpt), init_from=str(source), ema_decay=0.999)
    key = "diffusion.denoise_fn.init_conv.weight"
    assert torch.equal(stage.model.state_dict()[key], diffusion["denoise_fn.init_conv.weight"])
    assert torch.equal(stage.ema.model.state_dict()[key], diffusion["denoise_fn.init_conv.weight"])
    torch.testing.assert_close(stage.model.face_loc_emb.conv1.weight, model.face_loc_emb.conv1.weight)
