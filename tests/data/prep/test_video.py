"""`dawn-train data prep` on a real face with known motion: the animated astronaut (tests/data/prep/conftest.py).

Tolerances, at a 128-px crop of a 320 x 240 source (measured: roll 0.8 deg, centre 0.7 px, scale 2.2 %,
jitter 0.3 px): roll within 2 deg of the photo's own roll plus the applied rotation; face centre within
1.5 px of where the applied transform puts the photo's face centre; scale within 4 % of the photo's face
size times the applied zoom; jitter (RMS of the centre error around its mean) below 0.5 px."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dawn_train.data.prep.landmarks import FaceMesh
from dawn_train.data.prep.pose import face_size, head_pose
from tests.conftest import require_module

from .conftest import N_FRAMES, SIZE

require_module("mediapipe")


@pytest.fixture(scope="module")
def astro(prepared, animation):
    meta = json.loads((prepared / "astro talk.json").read_text())
    labels = dict(np.load(prepared / "astro talk.npz"))
    x0, y0, side = meta["crop_box"]
    with FaceMesh(video=False) as mesh:
        photo_mesh = mesh.landmarks(animation.photo)
    transforms = np.stack([animation.transform(t) for t in range(N_FRAMES)])
    centre = transforms[:, :, :2] @ animation.centre + transforms[:, :, 2]
    return {"meta": meta, "labels": labels, "to_crop": lambda p: (p - [x0, y0]) * SIZE / side, "side": side,
            "centre": centre, "photo_pose": head_pose(photo_mesh[None], 1)[0], "photo_size": face_size(photo_mesh)}


def test_layout_is_what_shards_read(prepared, astro):
    meta, labels = astro["meta"], astro["labels"]
    assert meta["n_frames"] == N_FRAMES and meta["fps"] == 25 and meta["size"] == SIZE
    for name, shape in (("pose", (6,)), ("blink", (2,)), ("face_box", (4,)), ("mouth_lmk", (20, 2)),
                        ("eye_lmk", (12, 2)), ("lmk68", (68, 2)), ("pose_3ddfa", (6,))):
        assert labels[name].shape == (N_FRAMES, *shape) and labels[name].dtype == np.float32, name
    from dawn_train.data.audio import read_wav
    from dawn_train.data.video import decode_all

    frames = decode_all((prepared / "astro talk.mp4").read_bytes())
    assert frames.shape == (N_FRAMES, SIZE, SIZE, 3)
    assert len(read_wav(prepared / "astro talk.wav")) == N_FRAMES * 640


def test_roll_translation_and_scale_are_recovered(astro, animation):
    pose = astro["labels"]["pose"]
    roll_error = pose[:, 2] - (astro["photo_pose"][2] + animation.motion.roll)
    assert np.abs(roll_error).max() < 2.0, roll_error
    centre_error = pose[:, 4:6] - astro["to_crop"](astro["centre"])
    assert np.abs(centre_error).max() < 1.5
    jitter = np.sqrt(((centre_error - centre_error.mean(0)) ** 2).sum(1).mean())
    assert jitter < 0.5, f"face centre jitter {jitter:.2f} px"
    expected_scale = astro["photo_size"] * animation.motion.scale / astro["side"]
    assert np.abs(pose[:, 3] / expected_scale - 1).max() < 0.04
    assert np.abs(pose[:, :2] - astro["photo_pose"][:2]).max() < 4.0  # no yaw/pitch was applied


def test_crop_is_one_box_and_landmarks_lie_inside(astro):
    assert len(astro["meta"]["crop_box"]) == 3  # one square for the whole video: no crop jitter at all
    labels = astro["labels"]
    for name in ("mouth_lmk", "eye_lmk", "lmk68"):
        assert labels[name].min() >= 0 and labels[name].max() < SIZE, name
    box = labels["face_box"]
    assert (box[:, 0] >= 0).all() and (box[:, 3] <= SIZE).all() and (box[:, 2] > box[:, 0]).all()
    mouth, eyes = labels["mouth_lmk"], labels["eye_lmk"]
    assert (mouth[:, :, 1].mean(1) > eyes[:, :, 1].mean(1)).all()  # mouth below the eyes (roll < 15 deg)


def test_painted_eye_closures_are_blinks(astro, animation):
    blink, closed = astro["labels"]["blink"], animation.motion.closed
    open_level = np.median(blink[~closed], axis=0)
    assert (blink[closed] < 0.6 * open_level).all(), blink[closed]
    assert ((blink[~closed] > 0.6 * open_level).all(axis=1)).mean() > 0.95

