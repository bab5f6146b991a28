"""`dawn-train generate` from any photo: the face is found and cropped as `data prep` crops, its pose and
eye openness are the reference state, and `<out stem>.crop.png` / `<out stem>.initial_state.json` are written
beside the video."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dawn_train.cli import main
from dawn_train.inference.generate import ImageError, generate
from dawn_train.inference.pose_blink import GenerationRequest, PoseBlink
from tests.conftest import require_module
from tests.inference.test_generate import read_mp4, stereo_wav

require_module("mediapipe")
pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """The whole astronaut photo (512 x 512, face small in it) cut to a non-square 512 x 400, a photo
    without a face and one with two faces."""
    from PIL import Image
    from skimage.data import astronaut

    folder = tmp_path_factory.mktemp("photos dir.v1")
    image = astronaut()
    paths = {name: folder / f"{name}.jpg" for name in ("astronaut", "wall", "twins")}
    Image.fromarray(image[:400]).save(paths["astronaut"], quality=92)
    Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))).save(paths["wall"])
    Image.fromarray(np.concatenate([image[:300, 100:350], image[:300, 130:380]], axis=1)).save(paths["twins"])
    return paths


def test_generate_crops_the_face_of_any_photo(models, photos, tmp_path):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.92)
    out = tmp_path / "out dir.x" / "talking.mp4"
    seen = []

    def held(request: GenerationRequest) -> PoseBlink:
        seen.append(request.image)
        n = request.n_frames
        return PoseBlink(np.zeros((n, 6), np.float32), np.full((n, 2), 0.3, np.float32), np.zeros(6, np.float32),
                         np.full(2, 0.3, np.float32))

    summary = generate(photos["astronaut"], speech, out, lfg=str(lfg), a2v=str(a2v), steps=1, size=64,
                       pose_blink_source=held, progress=False)
    frames, seconds, _ = read_mp4(out)
    assert len(frames) == summary["frames"] == int(0.92 * 25) and abs(seconds - len(frames) / 25) < 0.05
    from PIL import Image

    crop = np.asarray(Image.open(out.parent / "talking.crop.png"))
    assert crop.shape == (64, 64, 3) and np.array_equal(crop, seen[0])
    state = json.loads((out.parent / "talking.initial_state.json").read_text())
    assert state["faces_found"] == 1 and len(state["pose"]) == 6 and len(state["blink"]) == 2
    assert abs(state["pose"][2]) < 8 and 0.2 < state["blink"][0] < 0.5  # upright, eyes open
    x0, y0, side = state["crop_box"]
    assert 180 < x0 + side / 2 < 280 and side < 300  # around her face (x ~ 225 px), not the whole photo
    assert summary["face_box"] == pytest.approx(state["face_box"])
    assert summary["crop"] == str(out.parent / "talking.crop.png")


def test_pose_from_file_is_anchored_on_the_photo(models, photos, tmp_path):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.4)
    np.save(tmp_path / "pose.npy", np.zeros((10, 6), np.float32))
    summary = generate(photos["astronaut"], speech, tmp_path / "a.mp4", lfg=str(lfg), a2v=str(a2v), steps=1,
                       size=64, pose_from=str(tmp_path / "pose.npy"), progress=False)
    assert summary["frames"] == 10
    state = json.loads((tmp_path / "a.initial_state.json").read_text())
    from dawn_train.inference.pose_blink import pose_blink_from_files

    motion = pose_blink_from_files(str(tmp_path / "pose.npy"), None, state["pose"], state["blink"])(
        GenerationRequest(np.zeros((64, 64, 3), np.uint8), np.zeros(6400, np.float32), np.zeros((10, 80)), 10, 0))
    assert np.allclose(motion.ref_pose, state["pose"])


def test_no_face_and_several_faces_are_clear_errors(models, photos, tmp_path, capsys):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.2)
    common = dict(lfg=str(lfg), a2v=str(a2v), steps=1, size=64, progress=False)
    with pytest.raises(ImageError, match="no face found"):
        generate(photos["wall"], speech, tmp_path / "x.mp4", **common)
    with pytest.raises(ImageError, match="2 faces found.*--face-index"):
        generate(photos["twins"], speech, tmp_path / "x.mp4", **common)
    args = ["generate", "--image", str(photos["twins"]), "--audio", str(speech), "--out", str(tmp_path / "y.mp4"),
            "--lfg", str(lfg), "--a2v", str(a2v), "--steps", "1", "--size", "64", "--quiet", "--face-index", "1"]
    assert main(args) == 0 and (tmp_path / "y.crop.png").is_file()
    # a second generation into the folder, of the other face: each output keeps its own crop and state
    from PIL import Image

    assert main([*args[:6], str(tmp_path / "z.mp4"), *args[7:-1], "0"]) == 0
    first, second = (json.loads((tmp_path / f"{name}.initial_state.json").read_text()) for name in ("y", "z"))
    assert first["crop_box"] != second["crop_box"]
    assert not np.array_equal(*(np.asarray(Image.open(tmp_path / f"{name}.crop.png")) for name in ("y", "z")))
    assert not (tmp_path / "crop.png").exists() and not (tmp_path / "initial_state.json").exists()


def test_missing_prep_extra_is_one_line(photos, tmp_path):
    """Without mediapipe importable (blocked in a fresh interpreter), the crop path says what to install."""
    code = ("import sys; sys.modules['mediapipe'] = None\n"
            "from dawn_train.inference.source_image import crop_source\n"
            f"crop_source({str(photos['astronaut'])!r}, 64, None, __import__('pathlib').Path({str(tmp_path / 'o.mp4')!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "pip install 'dawn-train[prep]'" in last and "--no-crop" in last
