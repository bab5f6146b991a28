"""LFG stage: trains on synthetic shards, resumes after a kill, logs to W&B offline, loads official files."""
import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dawn_train.checkpoints import CheckpointError, convert_official, export_official, load_model
from dawn_train.cli import main
from dawn_train.tracking import read_offline_run

REPO = Path(__file__).resolve().parents[2]
CONFIG = [w for name in ("base", "demo/base", "demo/lfg") for w in ("-c", str(REPO / "experiments" / f"{name}.yaml"))]


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def trained_run(synth_shards, tmp_path_factory):
    """A 60-step tiny LFG run (cwd = a tmp dir, so runs/ lands there), validated with a (untrained) probe file."""
    from dawn_train.metrics.synthetic import ProbeConfig, SynthProbe, save_probe

    work = tmp_path_factory.mktemp("lfg")
    torch.manual_seed(0)
    save_probe(SynthProbe(ProbeConfig()), work / "probe file.pt")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        main(["fit", *CONFIG, f"--data.init_args.shards={synth_shards}", "--trainer.max_steps=60",
              "--trainer.val_check_interval=30", "--trainer.enable_progress_bar=false",
              f"--model.init_args.probe={work / 'probe file.pt'}"])
    finally:
        os.chdir(cwd)
    return work / "runs" / "lfg-demo"


@pytest.mark.slow
def test_reconstruction_loss_falls(trained_run):
    l1 = [v for _, v in series(metrics(trained_run), "train/l1_pyramid")]
    assert len(l1) >= 10
    first, last = sum(l1[:3]) / 3, sum(l1[-3:]) / 3
    assert last < 0.8 * first, f"reconstruction loss did not fall: {first:.3f} -> {last:.3f}"
    val = [v for _, v in series(metrics(trained_run), "val/l1")]
    assert len(val) == 2 and val[-1] < val[0]


@pytest.mark.slow
def test_validation_reads_the_reconstructions_with_the_probe(trained_run):
    """`probe`: every validation logs what the probe reads off the reconstructions (metrics/synthetic/reconstruction)
    beside the source frame's pose error; the values of an untrained probe mean nothing, their presence does."""
    rows = metrics(trained_run)
    for key in ("val/synth/MouthCorr", "val/synth/EyeCorr", "val/synth/PoseErr", "val/synth_still/PoseErr"):
        values = [v for _, v in series(rows, key)]
        assert len(values) == 2 and all(abs(v) < 1e6 for v in values), (key, values)


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics_and_images(trained_run):
    run = read_offline_run(trained_run)
    keys = set().union(*run["history"])
    assert {"train/loss", "train/l1_pyramid", "val/l1", "perf/samples_per_s"} <= keys
    grids = [p for p in run["media"] if p.endswith(".png")]
    assert grids  # image grids: source, driving, reconstruction, decoder's own image, flow, occlusion
    from PIL import Image
    with Image.open(grids[0]) as grid:
        assert grid.height == 6 * 64  # six rows of the demo's 64-px frames
    losses = [row["train/loss"] for row in run["history"] if "train/loss" in row]
    assert all(isinstance(v, float) for v in losses) and len(losses) >= 10


@pytest.mark.slow
def test_checkpoint_rebuilds_the_model(trained_run, synth_shards):
    model = load_model(trained_run / "checkpoints" / "last.ckpt", "lfg")
    assert model.num_regions == 10  # the demo config, rebuilt from the YAML saved in the checkpoint
    frames = torch.rand(1, 3, 64, 64)
    flow, occlusion = model.eval().encode(frames, frames)
    assert flow.shape == (1, 16, 16, 2) and occlusion.shape == (1, 1, 16, 16)


def wait_for_checkpoint(path: Path, deadline: float, poll: float = 0.25) -> dict:
    """Poll until `path` is a complete checkpoint: the same size and mtime at two polls in a row and
    loadable by torch.load (a file still being written is neither); fails the test at `deadline`."""
    seen, error = None, "not written"
    while time.time() < deadline:
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None and (stat.st_size, stat.st_mtime_ns) == seen:
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # a partial zip/pickle raises RuntimeError, EOFError, UnpicklingError ...
                error = f"not loadable yet ({type(exc).__name__}: {exc})"
        seen = stat and (stat.st_size, stat.st_mtime_ns)
        time.sleep(poll)
    pytest.fail(f"{path}: no complete checkpoint before the deadline ({error})")


def test_wait_for_checkpoint_returns_only_a_complete_file(tmp_path):
    """A checkpoint written slowly in pieces is returned once complete; a torn one never is."""
    import io
    import threading

    buffer = io.BytesIO()
    torch.save({"global_step": 10, "weights": torch.arange(50_000)}, buffer)
    data, path = buffer.getvalue(), tmp_path / "last.ckpt"

    def write_slowly():
        with open(path, "wb") as handle:
            for start in range(0, len(data), len(data) // 4):
                handle.write(data[start:start + len(data) // 4])
                handle.flush()
                time.sleep(0.4)  # longer than a poll: a pause that a plain size check would take for the end

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        assert wait_for_checkpoint(path, deadline=time.time() + 30, poll=0.1)["global_step"] == 10
    finally:
        writer.join()
    (tmp_path / "torn.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(pytest.fail.Exception, match="not loadable yet"):
        wait_for_checkpoint(tmp_path / "torn.ckpt", deadline=time.time() + 3, poll=0.1)


@pytest.mark.slow
def test_killed_run_resumes_at_the_same_step(synth_shards, tmp_path):
    # a checkpoint every 10 steps: the demo config's 400 took longer than the deadline on a loaded machine
    command = [sys.executable, "-m", "dawn_train.cli", "fit", *CONFIG, f"--data.init_args.shards={synth_shards}",
               "--checkpoint.every_n_train_steps=10", "--trainer.max_steps=1000", "--trainer.enable_progress_bar=false",
               "--trainer.val_check_interval=1000"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "runs" / "lfg-demo" / "checkpoints" / "last.ckpt"
    try:
        wait_for_checkpoint(last, deadline=time.time() + 240)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    saved = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert saved >= 10 and saved % 10 == 0
    resume = command[:-3] + [f"--trainer.max_steps={saved + 5}", "--ckpt_path=last", "--trainer.enable_progress_bar=false"]
    done = subprocess.run(resume, cwd=tmp_path, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Restored all states" in done.stderr + done.stdout
    final = torch.load(last, map_location="cpu", weights_only=False)
    assert final["global_step"] == saved + 5
    assert final["optimizer_states"][0]["state"], "optimizer state was not restored/saved"
    wandb_ids = (tmp_path / "runs" / "lfg-demo" / "wandb_run_id").read_text().split()
    assert len(wandb_ids) == 1  # the resumed run continued the same W&B run
    steps = [step for step, _ in series(metrics(tmp_path / "runs" / "lfg-demo"), "train/loss")]
    assert min(steps) < saved < max(steps)  # the CSV log kept the rows from before the kill


def official_lfg_file(shapes: dict, path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    payload = {group: {name: torch.randn(shape, generator=generator) if "num_batches" not in name
                       else torch.tensor(7) for name, shape in tensors.items()}
               for group, tensors in shapes.items()}
    payload.update(optimizer={}, epoch=3)  # present in official files, ignored by us
    torch.save(payload, path)
    return path


def test_official_checkpoint_converts_loads_strictly_and_round_trips(official_shapes, tmp_path, capsys):
    source = official_lfg_file(official_shapes["lfg128"], tmp_path / "LFG_128.pth")
    assert main(["convert-official", "lfg", str(source), "--out", str(tmp_path / "lfg.pt")]) == 0
    assert "66,004,557 parameters" in capsys.readouterr().out
    model = load_model(tmp_path / "lfg.pt", "lfg")
    exported = export_official(model, "lfg")
    original = torch.load(source, weights_only=True)
    for group in ("generator", "region_predictor", "bg_predictor"):
        assert exported[group].keys() == original[group].keys()
        assert all(torch.equal(exported[group][k], original[group][k]) for k in original[group])


def test_partial_official_checkpoint_lists_what_is_wrong(official_shapes, tmp_path):
    source = official_lfg_file(official_shapes["lfg128"], tmp_path / "LFG_128.pth")
    payload = torch.load(source, weights_only=True)
    payload["generator"].pop("final.weight")
    payload["bg_predictor"]["fc.weight"] = torch.zeros(3, 3)
    torch.save(payload, source)
    with pytest.raises(CheckpointError, match=r"1 missing \[generator.final.weight\].*1 mismatched \[bg_predictor.fc.weight"):
        convert_official("lfg", source, tmp_path / "out.pt")
    with pytest.raises(CheckpointError, match="missing top-level keys"):
        torch.save({"generator": {}}, tmp_path / "bad.pth")
        convert_official("lfg", tmp_path / "bad.pth", tmp_path / "out.pt")


def test_mouth_weight_adds_a_loss_inside_the_mouth_boxes():
    """`mouth_weight`: an L1 term over the union of both frames' mouth boxes, mirrored with the pair."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.stages.lfg import LFGStage

    config = yaml.safe_load((Path(__file__).parents[2] / "experiments/demo/lfg.yaml").read_text())
    torch.manual_seed(0)
    model = checkpoints.build(config["model"]["init_args"]["model"])
    mouth = torch.tensor([[[20.0, 40.0], [30.0, 44.0]]]).repeat(2, 1, 1)  # (B, K, 2) x, y pixels
    batch = {"source": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8),
             "driving": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8),
             "source_mouth_lmk": mouth, "driving_mouth_lmk": mouth + torch.tensor([0.0, 4.0])}
    off = LFGStage(model, perceptual="l1")
    assert off.regions(batch, 64, 64) == {}
    stage = LFGStage(model, perceptual="l1", mouth_weight=10.0)
    regions = stage.regions(batch, 64, 64)
    assert list(regions) == ["mouth"] and regions["mouth"].shape == (2, 1, 64, 64)
    rows, cols = regions["mouth"][0, 0].nonzero().unbind(1)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (40, 49, 20, 31)  # both boxes, int(min)..int(max+1)
    source, driving = batch["source"].float() / 255, batch["driving"].float() / 255
    losses, _ = stage.losses(source, driving, regions)
    assert losses["mouth_l1"] > 0 and "mouth_l1" not in off.losses(source, driving)[0]


def test_eye_weight_boxes_each_eye_and_skips_pairs_without_eye_landmarks():
    """`eye_weight`: one box per eye (6 landmarks each, not one box spanning both eyes and the nose between them),
    union over the pair; batches without `eye_lmk` (older shards) get no eye term."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.stages.lfg import LFGStage

    config = yaml.safe_load((Path(__file__).parents[2] / "experiments/demo/lfg.yaml").read_text())
    model = checkpoints.build(config["model"]["init_args"]["model"])
    angles = torch.pi * torch.tensor([1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])
    def eye(cx: float, half_height: float) -> torch.Tensor:
        return torch.stack([cx + 4 * torch.cos(angles), 20 - half_height * torch.sin(angles)], 1)
    open_eyes = torch.cat([eye(20.0, 1.5), eye(44.0, 1.5)])[None]  # (1, 12, 2)
    closed_eyes = torch.cat([eye(20.0, 0.0), eye(44.0, 0.0)])[None]
    frames = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    batch = {"source": frames, "driving": frames, "source_eye_lmk": open_eyes, "driving_eye_lmk": closed_eyes}
    stage = LFGStage(model, perceptual="l1", eye_weight=10.0)
    regions = stage.regions(batch, 64, 64)
    assert list(regions) == ["eyes"]
    mask = regions["eyes"][0, 0]
    rows, cols = mask.nonzero().unbind(1)
    assert (rows.min(), rows.max()) == (18, 22)  # int(20 - 1.5) .. int(20 + 1.5 + 1)
    assert set(cols.tolist()) == set(range(16, 26)) | set(range(40, 50))  # two boxes, nothing between them
    assert mask[20, 32] == 0
    source = frames.float() / 255
    losses, _ = stage.losses(source, source, regions)
    assert losses["eyes_l1"] >= 0 and "mouth_l1" not in losses
    without = {key: value for key, value in batch.items() if "eye" not in key}
    assert stage.regions(without, 64, 64) == {}


def test_change_weight_puts_the_loss_where_the_driving_frame_changed():
    """`change_weight`: the L1 of the reconstruction weighted by |driving - source|; an error where the two frames
    agree costs nothing, the same error where they differ costs its full size."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.stages.lfg import LFGStage

    config = yaml.safe_load((Path(__file__).parents[2] / "experiments/demo/lfg.yaml").read_text())
    model = checkpoints.build(config["model"]["init_args"]["model"])
    source = torch.full((1, 3, 64, 64), 0.5)
    driving = source.clone()
    driving[..., 10:14, 20:30] = 0.9  # an "eye" that changed: the only pixels the source does not explain
    prediction = driving.clone()
    no_equivariance = dict(perceptual="l1", equivariance_shift_weight=0.0, equivariance_affine_weight=0.0)
    stage = LFGStage(model, change_weight=2.0, **no_equivariance)

    def change_l1(pred: torch.Tensor) -> float:
        model.forward = lambda s, d, **_: {"prediction": pred}  # the loss of a known reconstruction
        return float(stage.losses(source, driving)[0]["change_l1"])

    assert change_l1(prediction) == pytest.approx(0.0)
    outside = prediction.clone()
    outside[..., 40:50, 20:30] += 0.3  # wrong where nothing changed: no change loss
    assert change_l1(outside) == pytest.approx(0.0, abs=1e-6)
    inside = prediction.clone()
    inside[..., 10:14, 20:30] -= 0.3  # wrong where the frame changed: weight 2 x mean error 0.3
    assert change_l1(inside) == pytest.approx(0.6, rel=1e-4)
    assert "change_l1" not in LFGStage(model, **no_equivariance).losses(source, driving)[0]


def test_occlusion_dropout_cuts_holes_in_training_pairs_and_decoded_weight_trains_the_decoder():
    """`occlusion_dropout`: a (B, 1, grid, grid) keep-mask with about that share of zero cells, only when on;
    `decoded_weight`: an L1 term on the decoder's own image.  Bad values are refused up front."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.stages.lfg import LFGStage

    config = yaml.safe_load((Path(__file__).parents[2] / "experiments/demo/lfg.yaml").read_text())
    model = checkpoints.build(config["model"]["init_args"]["model"])
    assert LFGStage(model, perceptual="l1").occlusion_holes(4, torch.device("cpu")) is None
    stage = LFGStage(model, perceptual="l1", occlusion_dropout=0.25, occlusion_dropout_grid=4, decoded_weight=10.0)
    torch.manual_seed(0)
    keep = stage.occlusion_holes(256, torch.device("cpu"))
    assert keep.shape == (256, 1, 4, 4) and set(keep.unique().tolist()) == {0.0, 1.0}
    assert (1 - keep).mean().item() == pytest.approx(0.25, abs=0.02)
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses, out = stage.losses(source, driving, occlusion_mask=torch.zeros(2, 1, 4, 4))
    assert losses["decoded_l1"].item() == pytest.approx(10 * (out["decoded"] - driving).abs().mean().item())
    assert "decoded_l1" not in LFGStage(model, perceptual="l1").losses(source, driving)[0]
    for bad in (dict(occlusion_dropout=1.0), dict(occlusion_dropout=-0.1), dict(occlusion_dropout_grid=0)):
        with pytest.raises(ValueError, match="occlusion_dropout"):
            LFGStage(model, perceptual="l1", **bad)
    # an LFG without an occlusion head would ignore the holes: refused, not silently trained without them
    params = config["model"]["init_args"]["model"]["init_args"]
    flow_params = {**params["generator_params"]["pixelwise_flow_predictor_params"], "estimate_occlusion_map": False}
    no_occlusion = checkpoints.build({"class_path": config["model"]["init_args"]["model"]["class_path"], "init_args": {
        **params, "generator_params": {**params["generator_params"], "pixelwise_flow_predictor_params": flow_params}}})
    assert LFGStage(no_occlusion, perceptual="l1").occlusion_holes(2, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="estimate_occlusion_map"):
        LFGStage(no_occlusion, perceptual="l1", occlusion_dropout=0.1)


def test_bf16_autocast_step_matches_float32_within_tolerance():
    """`trainer.precision: bf16-mixed` (the `bench cases --bf16` column): the LFG step's losses and gradients under
    CPU bf16 autocast stay close to float32's (same weights, inputs and equivariance draws), and every loss term is
    float32 (losses are reduced in float32, not bfloat16).  With the region, flow and background predictors in
    bfloat16 too the gradient cosine was 0.73 (those predictors' own 0.6-0.8); with them in float32
    (`models/precision.py`) it is ~0.95, the rest being the bfloat16 generator and VGG.  Minibatch noise is far larger."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.models.lfg.vgg import Vgg19Features
    from dawn_train.stages.lfg import LFGStage

    config = yaml.safe_load((REPO / "experiments/demo/lfg.yaml").read_text())
    torch.manual_seed(0)
    stage = LFGStage(checkpoints.build(config["model"]["init_args"]["model"]), perceptual="l1", scales=(1, 0.5, 0.25))
    stage.vgg = Vgg19Features().eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)

    def step(bf16: bool) -> tuple[dict, torch.Tensor]:
        stage.model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same equivariance transforms
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses, _ = stage.losses(source, driving)
        sum(losses.values()).backward()
        grad = torch.cat([p.grad.flatten() for p in stage.model.parameters() if p.grad is not None])
        return {k: v.detach() for k, v in losses.items()}, grad

    (full, grad_full), (half, grad_half) = step(False), step(True)
    assert full.keys() == half.keys()
    for name in full:
        assert half[name].dtype == torch.float32, name
        assert half[name].item() == pytest.approx(full[name].item(), rel=0.05, abs=1e-4), name
    assert torch.nn.functional.cosine_similarity(grad_full, grad_half, dim=0) > 0.9


def test_eye_region_weight_ties_one_region_to_the_eyes_and_follows_the_pair_through_flips():
    """`eye_region_weight`: zero when region `eye_region` sits on the eyes' centre and squashes across its main
    axis as the lids close, positive otherwise; the landmarks are flipped with the pair; bad settings are refused."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.models.lfg.losses import eye_region_loss
    from dawn_train.stages.augment import PairAugment
    from dawn_train.stages.lfg import LFGStage

    angles = torch.pi * torch.tensor([1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])

    def eyes(half_height: float, y: float = 30.5) -> torch.Tensor:  # (12, 2): eyes at x 20.5 and 44.5
        one = [torch.stack([cx + 4 * torch.cos(angles), y - half_height * torch.sin(angles)], 1) for cx in (20.5, 44.5)]
        return torch.cat(one)

    def params(centre: tuple[float, float], minor_std: float) -> dict:  # region 1 of 3, 16x16 heatmap, axis-aligned
        shift = torch.zeros(1, 3, 2)
        shift[0, 1] = torch.tensor(centre)
        covar = torch.eye(2).repeat(1, 3, 1, 1) * 0.01
        covar[0, 1] = torch.diag(torch.tensor([0.3, minor_std**2]))
        return {"shift": shift, "covar": covar, "heatmap": torch.zeros(1, 3, 16, 16)}

    # eye centre (32.5, 30.5) px: heatmap pixel (32, 30) / 4 = (8, 7.5) -> grid (2 * 8 / 15 - 1, 0)
    on_eyes = (2 * 8 / 15 - 1, 0.0)
    pair = torch.stack((eyes(1.2), eyes(0.3)))[None]  # open source, closed driving: lids 2.08 -> 0.52 px (1/4)
    assert eye_region_loss(params(on_eyes, 0.08), params(on_eyes, 0.02), pair, 1, 0.25).item() < 1e-4
    unchanged_shape = eye_region_loss(params(on_eyes, 0.08), params(on_eyes, 0.08), pair, 1, 0.25)
    assert unchanged_shape.item() == pytest.approx(math.log(4), rel=1e-3)  # |log 1 - log(1/4)|
    moved = eye_region_loss(params(on_eyes, 0.08), params((on_eyes[0], 0.2), 0.02), pair, 1, 0.25)
    assert moved.item() == pytest.approx(0.1, rel=1e-3)  # the driving region 0.2 off: mean over the 2 frames

    # the pair's flips: time reversal swaps the frames' landmarks, the mirror maps x -> W - x
    augment = PairAugment(flip_prob=1.0, jitter=0.0).train()
    frames = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    _, _, points = augment(*frames, points=pair)
    assert torch.equal(points, pair.flip(1))  # flip_prob 1: always reversed, never mirrored
    augment.flip_prob = 0.5
    torch.manual_seed(3)
    seen = set()
    for _ in range(20):
        source, driving, points = augment(*frames, points=pair)
        if torch.equal(source, frames[0].flip(-1)):  # mirrored
            seen.add("mirror")
            assert torch.allclose(points[..., 0], 64 - pair[..., 0]) and torch.equal(points[..., 1], pair[..., 1])
        elif torch.equal(source, frames[1]):
            seen.add("reverse")
    assert seen == {"mirror", "reverse"}

    config = yaml.safe_load((REPO / "experiments/demo/lfg.yaml").read_text())
    model = checkpoints.build(config["model"]["init_args"]["model"])
    stage = LFGStage(model, perceptual="l1", eye_region_weight=2.0, eye_region=3)
    batch = {"source": torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8),
             "driving": torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8),
             "source_eye_lmk": eyes(1.2)[None], "driving_eye_lmk": eyes(0.3)[None]}
    source, driving = batch["source"].float() / 255, batch["driving"].float() / 255
    losses, out = stage.losses(source, driving, eye_lmk=stage.eye_points(batch))
    expected = 2 * eye_region_loss(out["source_region_params"], out["driving_region_params"], pair, 3, 0.25)
    assert losses["eye_region"].item() == pytest.approx(expected.item(), rel=1e-5)
    losses["eye_region"].backward()  # reaches the region predictor
    assert model.region_predictor.regions.weight.grad.abs().sum() > 0
    without = {k: v for k, v in batch.items() if "eye" not in k}
    assert stage.eye_points(without) is None and LFGStage(model, perceptual="l1").eye_points(batch) is None
    with pytest.raises(ValueError, match="eye_region"):
        LFGStage(model, perceptual="l1", eye_region_weight=1.0, eye_region=10)


def test_eye_occlusion_weight_asks_for_a_low_occlusion_map_inside_the_eyes_where_the_lids_changed():
    """`eye_occlusion_weight`: the occlusion map inside both frames' eye boxes is pulled to
    exp(-|log lid ratio|) (binary KL per pixel): 1 for unchanged lids, 1/4 for lids 4x closer or further apart; outside it
    costs nothing; `eye_occlusion_power` raises that target to a power, `eye_occlusion_margin` asks for 1 at lid
    ratios near 1.  An LFG without an occlusion head is refused."""
    import yaml

    from dawn_train import checkpoints
    from dawn_train.models.lfg.losses import eye_occlusion_loss
    from dawn_train.stages.lfg import LFGStage

    angles = torch.pi * torch.tensor([1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])

    def eyes(half_height: float) -> torch.Tensor:  # (12, 2): eyes at x 20.5 and 44.5, y 30.5 (64-px frame)
        return torch.cat([torch.stack([cx + 4 * torch.cos(angles), 30.5 - half_height * torch.sin(angles)], 1)
                          for cx in (20.5, 44.5)])

    closing, reopening, still = (torch.stack(pair)[None] for pair in (
        (eyes(1.2), eyes(0.3)), (eyes(0.3), eyes(1.2)), (eyes(1.2), eyes(1.2))))
    boxes = LFGStage.eye_boxes(closing, 64, 16)
    assert boxes.shape == (1, 16, 16) and boxes[0, 7, 5] == 1 and boxes[0, 7, 8] == 0 and boxes[0, 2].sum() == 0
    quarter = torch.where(boxes[:, None] > 0, 0.25, 0.9)  # low inside the eye boxes only
    assert eye_occlusion_loss(quarter, closing, boxes).item() == pytest.approx(0.0, abs=1e-5)
    assert eye_occlusion_loss(quarter, reopening, boxes).item() == pytest.approx(0.0, abs=1e-5)
    assert eye_occlusion_loss(quarter, still, boxes).item() == pytest.approx(math.log(4), rel=1e-5)  # KL(1 || 1/4)
    assert eye_occlusion_loss(torch.ones(1, 1, 16, 16), still, boxes).item() == pytest.approx(0.0, abs=1e-5)
    sixteenth = torch.where(boxes[:, None] > 0, 1 / 16, 0.9)  # power 2: lids 4x closer ask for 1/16
    assert eye_occlusion_loss(sixteenth, closing, boxes, power=2.0).item() == pytest.approx(0.0, abs=1e-5)
    assert eye_occlusion_loss(quarter, closing, boxes, power=2.0).item() > 0.1
    assert eye_occlusion_loss(torch.ones(1, 1, 16, 16), still, boxes, power=2.0).item() == pytest.approx(0.0, abs=1e-5)
    # a margin m: lids within exp(m)x of the source's ask for 1; beyond, the ratio counts from there on
    jittered = torch.stack((eyes(1.2), eyes(1.1)))[None]  # lids 8% closer: an open eye's jitter, not a blink
    assert eye_occlusion_loss(torch.ones(1, 1, 16, 16), jittered, boxes, power=3.0, margin=0.1).item() == \
        pytest.approx(0.0, abs=1e-5)
    assert eye_occlusion_loss(torch.ones(1, 1, 16, 16), jittered, boxes, power=3.0).item() > 0.05
    eighth = torch.where(boxes[:, None] > 0, 0.125, 0.9)  # 4x closer with margin log 2: as if 2x closer, power 3
    assert eye_occlusion_loss(eighth, closing, boxes, power=3.0, margin=math.log(2)).item() == \
        pytest.approx(0.0, abs=1e-5)

    config = yaml.safe_load((REPO / "experiments/demo/lfg.yaml").read_text())
    model = checkpoints.build(config["model"]["init_args"]["model"])
    frames = torch.rand(1, 3, 64, 64)
    for power, margin in ((1.0, 0.0), (2.0, 0.5)):
        stage = LFGStage(model, perceptual="l1", eye_occlusion_weight=10.0, eye_occlusion_power=power,
                         eye_occlusion_margin=margin)
        losses, out = stage.losses(frames, frames, eye_lmk=closing)
        expected = 10 * eye_occlusion_loss(out["occlusion_map"], closing, boxes, power=power, margin=margin)
        assert losses["eye_occlusion"].item() == pytest.approx(expected.item()) and "eye_region" not in losses
    params = config["model"]["init_args"]["model"]["init_args"]
    flow_params = {**params["generator_params"]["pixelwise_flow_predictor_params"], "estimate_occlusion_map": False}
    no_occlusion = checkpoints.build({"class_path": config["model"]["init_args"]["model"]["class_path"], "init_args": {
        **params, "generator_params": {**params["generator_params"], "pixelwise_flow_predictor_params": flow_params}}})
    with pytest.raises(ValueError, match="eye_occlusion_weight"):
        LFGStage(no_occlusion, perceptual="l1", eye_occlusion_weight=1.0)
    for bad in ({"eye_occlusion_power": 0.0}, {"eye_occlusion_margin": -0.1}):  # a target above 1 has no meaning
        with pytest.raises(ValueError, match="eye_occlusion_power must be > 0 and eye_occlusion_margin >= 0"):
            LFGStage(model, perceptual="l1", eye_occlusion_weight=1.0, **bad)
