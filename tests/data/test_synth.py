import json

import numpy as np

from dawn_train.data.audio import read_wav
from dawn_train.data.face_layout import EYE_HALF_WIDTH
from dawn_train.data.schema import FPS, SAMPLES_PER_FRAME
from dawn_train.data.synth import mouth_from_audio, random_identity, render_frame, synth_video
from dawn_train.data.video import decode_all


def test_deterministic_for_a_seed():
    a, b, c = synth_video(5, 1, 1.0, 64), synth_video(5, 1, 1.0, 64), synth_video(6, 1, 1.0, 64)
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["audio"], b["audio"])
    for key in a["labels"]:
        assert np.array_equal(a["labels"][key], b["labels"][key])
    assert not np.array_equal(a["frames"], c["frames"])


def test_mouth_follows_audio_loudness():
    video = synth_video(0, 0, 4.0, 64)
    mouth, audio = video["labels"]["mouth"], video["audio"]
    assert np.array_equal(mouth, mouth_from_audio(audio, len(mouth)))
    rms = np.sqrt((audio[: len(mouth) * SAMPLES_PER_FRAME].reshape(len(mouth), -1) ** 2).mean(1))
    assert np.corrcoef(rms, mouth)[0, 1] > 0.95
    assert mouth.max() > 0.5 and (mouth < 0.05).any()  # speech and pauses


def test_blinks_at_a_natural_rate_and_visible_in_openness():
    rates = []
    for index in range(12):
        video = synth_video(1, index, 8.0, 64)
        blink, events = video["labels"]["blink"], video["meta"]["blinks"]
        rates.append(len(events) / 8.0)
        for start, length in events:
            assert 3 <= length <= 6
            assert blink[start:start + length, 0].min() < 0.5 * blink[:, 0].max()
    assert 0.15 <= np.mean(rates) <= 0.9


def test_labels_are_geometrically_consistent():
    video = synth_video(2, 0, 1.0, 128)
    box, lips = video["labels"]["face_box"], video["labels"]["mouth_lmk"]
    inside = (lips[..., 0] >= box[:, None, 0]) & (lips[..., 0] <= box[:, None, 2]) \
        & (lips[..., 1] >= box[:, None, 1]) & (lips[..., 1] <= box[:, None, 3])
    assert inside.all()
    pose = video["labels"]["pose"]
    assert np.allclose((box[:, 0] + box[:, 2]) / 2, pose[:, 4], atol=1e-3)  # tx = face centre
    # the mouth region is darker when the mouth is open (the rendering shows the label)
    frames = video["frames"].astype(np.float32).mean(-1)
    centre = lips[:, 12:].mean(1).round().astype(int)
    inner = np.array([frames[t, c[1], c[0]] for t, c in enumerate(centre)])
    open_, closed = video["labels"]["mouth"] > 0.6, video["labels"]["mouth"] < 0.05
    if open_.any() and closed.any():
        assert inner[open_].mean() < inner[closed].mean()


def test_eye_landmarks_follow_the_drawn_eyes_and_the_openness_label():
    """`eye_lmk` (T, 12, 2), 68-point order, image-left eye first: each eye's aspect ratio (mean of the two lid
    distances over the corner distance) is the openness label times sin(60 deg) (the lid points sit at +-60 deg
    on the eye's ellipse), and the sclera pixels lie inside each eye's landmark box."""
    video = synth_video(1, 3, 8.0, 128)
    eyes, openness = video["labels"]["eye_lmk"].astype(np.float64), video["labels"]["blink"]
    assert eyes.shape == (len(openness), 12, 2) and len(video["meta"]["blinks"]) > 0
    for side in range(2):
        p = eyes[:, 6 * side: 6 * side + 6]
        lids = (np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=-1)) / 2
        ratio = lids / np.linalg.norm(p[:, 0] - p[:, 3], axis=-1)
        assert np.allclose(ratio, openness[:, side] * np.sin(np.pi / 3), atol=1e-3)
    assert (eyes[:, :6, 0].mean(1) < eyes[:, 6:, 0].mean(1)).all()  # image-left eye first
    white = (video["frames"].astype(np.int32) >= 225).all(-1)  # sclera (242) against skin, hair and background
    for t in np.flatnonzero(openness.min(1) > 0.25)[:20]:
        ys, xs = np.nonzero(white[t])
        for side in range(2):
            p = eyes[t, 6 * side: 6 * side + 6]
            near = np.abs(xs - p[:, 0].mean()) < 12
            assert near.sum() > 0
            assert (xs[near] >= p[:, 0].min() - 1).all() and (xs[near] <= p[:, 0].max() + 1).all()
            assert (ys[near] >= p[:, 1].min() - 1.5).all() and (ys[near] <= p[:, 1].max() + 1.5).all()


def test_closing_eyes_and_mouth_changes_only_pixels_inside_their_landmarks():
    """A closed eye or mouth is a thin ellipse: it must end at its own width (its anti-aliased edge once drew a
    line across the face, 4x the eye's width at a blink's deepest frame)."""
    identity = random_identity(np.random.default_rng(3))
    background = np.full((128, 128, 3), 0.5, dtype=np.float32)
    for pose in synth_video(2, 0, 0.2, 128)["labels"]["pose"][:3]:
        wide, _, lips_wide, eyes_wide = render_frame(128, pose, np.array([0.35, 0.35]), 1.0, identity, background)
        shut, _, lips_shut, eyes_shut = render_frame(128, pose, np.array([0.045, 0.0]), 0.0, identity, background)
        changed = np.abs(wide.astype(int) - shut.astype(int)).max(-1) > 2
        allowed = np.zeros_like(changed)
        ys, xs = np.mgrid[0:128, 0:128] + 0.5
        for points in (np.concatenate([lips_wide, lips_shut]), np.concatenate([eyes_wide[:6], eyes_shut[:6]]),
                       np.concatenate([eyes_wide[6:], eyes_shut[6:]])):
            (x0, y0), (x1, y1) = points.min(0) - 1.5, points.max(0) + 1.5
            allowed |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        assert changed.any() and not (changed & ~allowed).any(), np.argwhere(changed & ~allowed)[:5]


def test_cli_writes_prepared_layout(synth_raw):
    ids = sorted(p.stem for p in synth_raw.glob("*.json"))
    assert len(ids) == 8
    meta = json.loads((synth_raw / f"{ids[0]}.json").read_text())
    frames = decode_all((synth_raw / f"{ids[0]}.mp4").read_bytes())
    assert frames.shape == (meta["n_frames"], 64, 64, 3) and meta["fps"] == FPS
    assert len(read_wav(synth_raw / f"{ids[0]}.wav")) == meta["n_frames"] * SAMPLES_PER_FRAME
    labels = np.load(synth_raw / f"{ids[0]}.npz")
    assert labels["pose"].shape == (meta["n_frames"], 6) and labels["blink"].shape == (meta["n_frames"], 2)
    assert 0 < labels["blink"].max() <= 1.0 / EYE_HALF_WIDTH


def test_rerun_keeps_matching_videos_and_rerenders_the_others(tmp_path):
    """A rerun keeps complete videos made with the same options and renderer and renders the rest again: another
    seed, length or an older renderer's video is never kept beside the new ones."""
    from dawn_train.data.synth import RENDERER_VERSION, synth_dataset

    out = tmp_path / "tmp.raw dir"
    synth_dataset(out, videos=2, seconds=0.2, size=64, seed=0, progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    synth_dataset(out, videos=2, seconds=0.2, size=64, seed=0, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamp  # kept
    meta = json.loads((out / "synth00001.json").read_text())
    assert meta["renderer"] == RENDERER_VERSION
    (out / "synth00001.json").write_text(json.dumps({**meta, "renderer": RENDERER_VERSION - 1}))
    synth_dataset(out, videos=2, seconds=0.2, size=64, seed=0, progress=False)
    assert json.loads((out / "synth00001.json").read_text())["renderer"] == RENDERER_VERSION
    assert (out / "synth00000.json").stat().st_mtime_ns == stamp["synth00000.json"]
    synth_dataset(out, videos=2, seconds=0.4, size=64, seed=1, progress=False)
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert [(m["seed"], m["n_frames"]) for m in metas] == [(1, 10), (1, 10)]
