"""Synthetic-domain metrics: the torch renderer, the probe's accuracy on held-out videos, and the
metrics on videos whose answer is known (a copy of the truth, a frozen mouth, a shifted clip,
closed eyes, the still frame)."""
import numpy as np
import pytest
import torch

from dawn_train.data import face_layout as layout
from dawn_train.data import schema
from dawn_train.data.synth import random_identity, render_frame, synth_video
from dawn_train.metrics.synthetic import (
    Augment,
    MouthSync,
    ProbeConfig,
    SyntheticSuite,
    evaluate_probe,
    load_probe,
    mouth_from_landmarks,
    render,
    save_probe,
    scene_from_labels,
    shifted_correlations,
    train_probe,
)
from dawn_train.metrics.synthetic.probe import EYE_WINDOW, MOUTH_WINDOW, feature_shift
from dawn_train.metrics.synthetic.render import quantize
from dawn_train.metrics.weights import MetricUnavailable

pytestmark = pytest.mark.usefixtures("one_thread")

SEED = 4242  # test videos: identities the probe never trained on (it trains on sampled scenes)
# A small probe trained on rendered frames only (no H.264, no blur): about 40 s on one thread. The
# default probe of `dawn-train data probe` is larger, trains for minutes and reads mp4 frames too.
# 500 steps, not fewer: at 300, training seeds 0-7 gave pitch errors of 0.75-2.37 deg and eyes R^2 0.943-0.98
# (3 of 8 seeds below this file's limits, and another CPU's kernels act like another seed); at 500 every seed
# holds mouth R^2 >= 0.987, eyes >= 0.963, yaw <= 1.07 deg, pitch <= 0.98, roll <= 0.37.
PROBE_STEPS = 500
TINY = ProbeConfig(coarse_channels=(8, 16, 32, 32), face_crop=32, face_channels=(12, 16, 24, 32, 32, 48),
                   eye_channels=(8, 16, 16, 32), eye_hidden=32, mouth_channels=(8, 16, 16, 32), mouth_hidden=32,
                   hidden=128)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "probe.pt"
    train_probe(path, steps=PROBE_STEPS, batch_size=32, lr=3e-3, config=TINY, batch_reuse=3, eval_videos=0,
                augment=Augment(large_fraction=0.0, mp4_fraction=0.0, blur_fraction=0.0))
    return load_probe(path)


def video_tensors(index: int, seconds: float = 2.0, size: int = 64):
    """One held-out video: frames (1, T, 3, H, W) in [0, 1], its labels and identity."""
    video = synth_video(SEED, index, seconds, size)
    frames = torch.from_numpy(video["frames"]).permute(0, 3, 1, 2).float() / 255
    return frames[None], video["labels"], random_identity(np.random.default_rng([SEED, index]))


def test_torch_renderer_draws_what_synth_draws():
    video = synth_video(SEED, 0, 0.4, 64)
    labels = video["labels"]
    scene = scene_from_labels(random_identity(np.random.default_rng([SEED, 0])), labels["pose"], labels["blink"],
                              labels["mouth"])
    frames = torch.from_numpy(video["frames"]).permute(0, 3, 1, 2).float() / 255
    diff = (quantize(render(scene, 64)) - frames).abs() * 255
    assert diff.max() <= 1.0 + 1e-4  # rounding ties only
    assert (diff > 0.5).float().mean() < 1e-3


def test_probe_crops_hold_the_widest_eyes_and_mouth():
    """The probe's eye and mouth windows (sized from data/face_layout.py) contain the renderer's landmarks of the
    widest open eyes and mouth at the extreme poses of the data: a face made larger needs larger windows."""
    identity = random_identity(np.random.default_rng([SEED, 1]))
    widest = layout.EYE_OPEN[1] * 1.07  # the second eye is drawn up to 7 % more open
    for yaw, pitch, roll in [(0, 0, 0), (16, 12, 7), (-16, -12, -7)]:
        pose = np.array([yaw, pitch, roll, 0.72, 32, 34], dtype=np.float32)
        _, _, mouth_lmk, eye_lmk = render_frame(64, pose, np.array([widest, widest]), 1.0, identity,
                                                 np.zeros((64, 64, 3)))
        radius, (cos, sin) = pose[3] * 64 / 2, (np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll)))
        d = np.concatenate([eye_lmk, mouth_lmk]) - pose[4:6]
        units = np.stack([cos * d[:, 0] + sin * d[:, 1], -sin * d[:, 0] + cos * d[:, 1]], 1) / radius
        shift = feature_shift(torch.from_numpy(pose)[None])[0].numpy()
        n = schema.EYE_POINTS
        for points, centre, window in [
            (units[:n], shift + [-layout.EYE_X, layout.EYE_Y], EYE_WINDOW),
            (units[n:2 * n], shift + [layout.EYE_X, layout.EYE_Y], EYE_WINDOW),
            (units[2 * n:], shift + [0, layout.MOUTH_Y], MOUTH_WINDOW),
        ]:
            assert (np.abs(points - centre) <= np.asarray(window)).all(), (yaw, pitch, roll, points - centre, window)


def test_mouth_from_landmarks_is_the_label():
    labels = synth_video(SEED, 1, 0.4, 64)["labels"]
    np.testing.assert_allclose(mouth_from_landmarks(labels["mouth_lmk"]), labels["mouth"], atol=1e-4)


def test_probe_accuracy_on_held_out_identities(probe):
    report = evaluate_probe(probe, videos=3, seconds=2.0, size=64, seed=SEED + 1, mp4=False)
    assert report["mouth_r2"] >= 0.97, report
    assert report["eyes_r2"] >= 0.94, report
    # well below the error of a constant guess (the held-out poses' mean: 5.1, 2.2 and 1.2 deg)
    for angle, limit in (("yaw", 1.5), ("pitch", 1.2), ("roll", 0.6)):
        assert report[f"{angle}_mae_deg"] < limit, report  # the default probe: < 0.5 deg (README)
    assert report["colour_mae"] < 0.05 and report["aspect_mae"] < 0.01, report
    report = evaluate_probe(probe, videos=1, seconds=2.0, size=128, seed=SEED + 1, mp4=False)  # resized to 64
    assert report["mouth_r2"] >= 0.95 and report["eyes_r2"] >= 0.9, report


def test_probe_file_is_rebuilt_strictly(probe, tmp_path):
    with pytest.raises(MetricUnavailable, match="dawn-train data probe"):
        load_probe(tmp_path / "missing.pt")
    save_probe(probe, tmp_path / "probe.pt")
    blob = torch.load(tmp_path / "probe.pt", weights_only=True)
    assert load_probe(tmp_path / "probe.pt").config == probe.config
    blob["config"]["hidden"] = 64  # the weights no longer fit the architecture the file describes
    torch.save(blob, tmp_path / "probe.pt")
    with pytest.raises(ValueError, match="does not match"):
        load_probe(tmp_path / "probe.pt")
    suite = SyntheticSuite(tmp_path / "missing.pt")
    assert set(suite.unavailable) >= {"MouthCorr", "PoseErr"}
    frames, labels, _ = video_tensors(0, seconds=0.6)
    suite.update(frames, frames, frames[:, 0], torch.from_numpy(labels["pose"])[None])
    rows = suite.compute()
    assert rows["generated"]["PSNR"] == pytest.approx(100.0) and rows["generated"]["MouthCorr"] is None


def run_suite(probe, generated, real, labels, source=None):
    suite = SyntheticSuite(probe)
    suite.update(generated, real, real[:, 0] if source is None else source, torch.from_numpy(labels["pose"])[None],
                 mouth=torch.from_numpy(labels["mouth"])[None])
    return suite.compute()


def test_copy_of_the_truth_scores_perfectly(probe):
    real, labels, _ = video_tensors(2)
    rows = run_suite(probe, real, real, labels)
    gen, truth = rows["generated"], rows["ground truth"]
    assert gen["PSNR"] == pytest.approx(100.0) and gen["SSIM"] == pytest.approx(1.0, abs=1e-6)
    assert gen["MouthCorr"] > 0.97 and gen["SyncOffset"] == 0 and gen["SyncConf"] > 0.1
    assert gen["PoseErr"] == pytest.approx(truth["PoseErr"]) and gen["PoseErr"] < 2.0  # the probe's own error
    assert gen["Blink/s"] == truth["Blink/s"]
    assert gen["IdErr"] < 0.05
    still = rows["still frame"]
    assert still["PSNR"] < gen["PSNR"] and still["IdErr"] == 0.0 and still["MouthCorr"] == 0.0


def test_frozen_mouth_does_not_correlate(probe):
    real, labels, identity = video_tensors(3)
    scene = scene_from_labels(identity, labels["pose"], labels["blink"], np.full_like(labels["mouth"], 0.3))
    frozen = quantize(render(scene, 64))[None]
    rows = run_suite(probe, frozen, real, labels)
    assert abs(rows["generated"]["MouthCorr"]) < 0.3
    assert rows["generated"]["PSNR"] > 25  # everything else is right


def test_three_frame_lag_is_found(probe):
    real, labels, _ = video_tensors(4)
    lagged = torch.cat([real[:, :1].expand(-1, 3, -1, -1, -1), real[:, :-3]], 1)  # generated[t] = real[t - 3]
    rows = run_suite(probe, lagged, real, labels)
    assert rows["generated"]["SyncOffset"] == 3
    assert rows["generated"]["MouthCorr"] < rows["ground truth"]["MouthCorr"]


def test_closed_eyes_give_no_blinks(probe):
    real, labels, identity = video_tensors(5, seconds=4.0)
    assert rows_blinks(probe, real, labels) > 0  # the real video blinks, and the probe sees it
    scene = scene_from_labels(identity, labels["pose"], np.full_like(labels["blink"], 0.05), labels["mouth"])
    closed = quantize(render(scene, 64))[None]
    assert rows_blinks(probe, closed, labels) == 0


def rows_blinks(probe, video, labels):
    return run_suite(probe, video, video, labels)["generated"]["Blink/s"]


def test_still_frame_row_depends_on_the_source_only(probe):
    real, labels, _ = video_tensors(6, seconds=1.0)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    a, b = run_suite(probe, real, real, labels), run_suite(probe, noise, real, labels)
    assert a["still frame"] == b["still frame"]
    assert a["generated"] != b["generated"]
    other_source = run_suite(probe, real, real, labels, source=real[:, -1])
    assert other_source["still frame"] != a["still frame"]


def test_shifted_correlations_and_rank_merge():
    rng = np.random.default_rng(0)
    reference = rng.random(60)
    corrs = shifted_correlations(np.roll(reference, 2), reference, 5)
    assert int(np.argmax(corrs)) - 5 == 2 and corrs.max() == pytest.approx(1.0)
    mouth = torch.tensor(rng.random((4, 40)))
    reference = torch.tensor(rng.random((4, 40)))
    whole, rank0, rank1 = MouthSync(), MouthSync(), MouthSync()
    whole.update(mouth, reference)
    rank0.update(mouth[:2], reference[:2])
    rank1.update(mouth[2:], reference[2:])
    rank0.merge_state(rank1)  # what the sum reduction does across DDP ranks
    for name, value in whole.compute().items():
        assert float(rank0.compute()[name]) == pytest.approx(float(value)), name


def test_mouth_sync_of_clips_too_short_is_not_a_number():
    """Clips shorter than the offset search (2 max_offset + 3 frames) are skipped; with none left there is no lip
    sync to report, which the suite shows as n/a, never as a correlation of 0."""
    metric = MouthSync(max_offset=5)
    metric.update(torch.rand(2, 12), torch.rand(2, 12))
    assert int(metric.n_skipped) == 2 and all(v.isnan() for v in metric.compute().values())
    metric.update(torch.rand(1, 13), torch.rand(1, 13))
    assert not any(v.isnan() for v in metric.compute().values())


def test_head_motion_is_the_std_of_the_angles():
    from dawn_train.metrics.synthetic import HeadMotion

    t = torch.arange(200, dtype=torch.float64)
    pose = torch.zeros(2, 200, 6, dtype=torch.float64)
    pose[0, :, 0] = 3 * torch.sin(t / 7)  # yaw only: std 3 / sqrt(2) over whole periods, mean of 3 angles / 3
    metric = HeadMotion()
    metric.update(pose[:1])
    assert float(metric.compute()) == pytest.approx(3 / 2 ** 0.5 / 3, rel=0.03)
    frozen = HeadMotion()
    frozen.update(pose[1:] + 5.0)  # a head held at any angle does not move
    assert float(frozen.compute()) == 0.0


def test_lfg_ceiling_row_only_when_given(probe):
    real, labels, _ = video_tensors(7, seconds=1.0)
    mouth = torch.as_tensor(labels["mouth"], dtype=torch.float32)[None]
    suite = SyntheticSuite(probe)
    suite.update(real, real, real[:, 0], torch.as_tensor(labels["pose"])[None], mouth=mouth)
    assert "LFG ceiling" not in suite.compute()
    suite.reset()
    half = real * 0.5
    suite.update(real, real, real[:, 0], torch.as_tensor(labels["pose"])[None], mouth=mouth, reconstruction=half)
    rows = suite.compute()
    assert rows["LFG ceiling"]["PSNR"] < rows["generated"]["PSNR"] and rows["LFG ceiling"]["MouthCorr"] is not None


def test_pbnet_motion_row_reads_the_signals_only_when_given(probe):
    """PBNet's sampled pose and blinks are scored from the signals themselves, in their own row: a sampled blink
    sequence with two dips counts two blinks whatever the video shows, and a still head has PoseStd 0."""
    real, labels, _ = video_tensors(7, seconds=1.0)
    pose = torch.as_tensor(labels["pose"])[None]
    suite = SyntheticSuite(probe)
    suite.update(real, real, real[:, 0], pose)
    assert "PBNet motion" not in suite.compute()
    t = real.shape[1]
    blink = torch.full((1, t, 2), 0.3)
    blink[:, 3:6], blink[:, 14:17] = 0.02, 0.02  # two 3-frame blinks
    suite.update_motion(pose[..., :].clone().fill_(4.0), blink)  # a head held still at 4 deg
    rows = suite.compute()
    assert rows["PBNet motion"]["Blink/s"] == pytest.approx(2 / (t / 25))
    assert rows["PBNet motion"]["PoseStd"] == 0.0 and rows["PBNet motion"]["PSNR"] is None
    assert rows["generated"]["Blink/s"] != rows["PBNet motion"]["Blink/s"]  # the video's own reading is apart
    suite.reset()
    assert "PBNet motion" not in (suite.update(real, real, real[:, 0], pose), suite.compute())[1]


def test_correlation_from_running_sums():
    from dawn_train.metrics.synthetic.reconstruction import Correlation

    x, y = torch.randn(200, dtype=torch.float64), torch.randn(200, dtype=torch.float64)
    metric = Correlation()
    for part_x, part_y in zip((x + 0.5 * y).split(37), y.split(37)):  # in batches, as validation feeds it
        metric.update(part_x, part_y)
    expected = np.corrcoef((x + 0.5 * y).numpy(), y.numpy())[0, 1]
    assert abs(float(metric.compute()) - expected) < 1e-9
    metric.reset()
    metric.update(-y, y)
    assert abs(float(metric.compute()) + 1) < 1e-9
    metric.reset()
    metric.update(torch.zeros(10), torch.randn(10))  # a mouth that never moves follows nothing
    assert float(metric.compute()) == 0.0


def test_reconstruction_probe_scores_a_copy_and_the_source(probe):
    """The LFG validation metric on pairs whose answer is known: a reconstruction that is the driving frame follows
    mouth, eyes and pose; one that is the source frame follows nothing and scores the still-frame pose error."""
    from dawn_train.metrics.synthetic.reconstruction import ReconstructionProbe

    frames, labels, _ = video_tensors(2, seconds=3.0)
    assert labels["blink"][:, 0].min() < 0.5 * labels["blink"][:, 0].max()  # the clip holds a blink
    driving = frames[0]
    source = frames[0, :1].expand_as(driving)
    metric = ReconstructionProbe(probe)
    for part in range(0, len(driving), 32):
        sl = slice(part, part + 32)
        metric.update(driving[sl], driving[sl], source[sl])
    copy = metric.compute()
    assert copy["synth/MouthCorr"] > 0.99 and copy["synth/EyeCorr"] > 0.99, copy
    assert copy["synth/PoseErr"] < 1e-6 and copy["synth_still/PoseErr"] > 2.0, copy
    metric.reset()
    metric.update(source, driving, source)
    still = metric.compute()
    assert still["synth/MouthCorr"] == 0.0 and still["synth/EyeCorr"] == 0.0, still
    assert still["synth/PoseErr"] == pytest.approx(copy["synth_still/PoseErr"]), still
