"""`dawn-train generate` with HuBERT features (`--features hubert --hubert-dir DIR`), on tiny checkpoints and a
tiny randomly initialised HubertModel saved to a local directory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dawn_train import checkpoints
from dawn_train.cli import main
from dawn_train.data.hubert import HubertFeatures
from dawn_train.inference.generate import generate, load_audio
from dawn_train.inference.pose_blink import GenerationRequest, PoseBlink
from tests.conftest import TINY_HUBERT_DIM
from tests.inference.test_generate import stereo_wav
from tests.stages.test_a2v import TINY_A2V, make_tiny_lfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(synth_raw, tiny_hubert, tmp_path_factory) -> dict:
    """A tiny LFG and two tiny A2V-FDMs taking the tiny HuBERT's 32-d features: one records no feature (as a
    converted official file), one records the spec of the shards it was trained on."""
    work = tmp_path_factory.mktemp("hubert models")
    torch.manual_seed(0)
    config = {"class_path": "dawn_train.models.a2v.build_a2v",
              "init_args": {**TINY_A2V, "dim_mults": [1, 2], "cond_aud": TINY_HUBERT_DIM}}
    model = checkpoints.build(config)
    spec = HubertFeatures(tiny_hubert, device="cpu").describe()
    return {"lfg": make_tiny_lfg(synth_raw, work / "lfg.pt"),
            "bare": checkpoints.save_converted(model, config, "a2v", work / "a2v bare.pt"),
            "recorded": checkpoints.save_converted(model, config, "a2v", work / "a2v.hubert.pt",
                                                   metadata={"dawn_a2v": {"audio_feature": spec, "image_size": 64}})}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage.data import astronaut

    path = tmp_path_factory.mktemp("photo") / "face.png"
    Image.fromarray(astronaut()[0:220, 110:310]).save(path)
    return path


def test_cli_generates_with_hubert_features(models, tiny_hubert, photo, tmp_path, capsys):
    """A checkpoint that records no feature (a converted official file) is told `--features hubert`."""
    speech = stereo_wav(tmp_path / "speech.wav", 0.9)
    out = tmp_path / "talking head.mp4"
    code = main(["generate", "--image", str(photo), "--audio", str(speech), "--out", str(out), "--lfg", str(models["lfg"]),
                 "--a2v", str(models["bare"]), "--features", "hubert", "--hubert-dir", str(tiny_hubert),
                 "--steps", "1", "--size", "64", "--quiet", "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["audio_feature"] == "hubert" and summary["frames"] == 22 and out.stat().st_size > 0
    assert "features" in summary["memory_phases_bytes"]


def test_recorded_feature_is_computed_from_the_model_dir(models, tiny_hubert, photo, tmp_path):
    """The checkpoint records HuBERT: no --features needed; the condition holds the HuBERT rows of the audio."""
    speech = stereo_wav(tmp_path / "speech.wav", 0.6)
    seen = []

    def still(request: GenerationRequest) -> PoseBlink:
        seen.append(request.audio_feat)
        n = request.n_frames
        return PoseBlink(np.zeros((n, 6), np.float32), np.full((n, 2), 0.3, np.float32), np.zeros(6, np.float32),
                         np.full(2, 0.3, np.float32))

    summary = generate(photo, speech, tmp_path / "out.mp4", lfg=str(models["lfg"]), a2v=str(models["recorded"]),
                       hubert_dir=str(tiny_hubert), steps=1, size=64, pose_blink_source=still, progress=False)
    expected = HubertFeatures(tiny_hubert, device="cpu").compute(load_audio(speech), summary["frames"])
    assert summary["audio_feature"] == "hubert" and seen[0].shape == (15, TINY_HUBERT_DIM)
    assert np.array_equal(seen[0], expected.astype(np.float16).astype(np.float32))


def test_hubert_errors_are_clear(models, tiny_hubert, photo, tmp_path, capsys):
    speech = stereo_wav(tmp_path / "speech.wav", 0.3)
    base = ["generate", "--image", str(photo), "--audio", str(speech), "--out", str(tmp_path / "o.mp4"), "--quiet"]
    cases = [  # (extra arguments, what the one-line error says)
        (["--lfg", str(models["lfg"]), "--a2v", str(models["recorded"])], "give --hubert-dir DIR"),
        (["--lfg", "no.ckpt", "--a2v", "no.ckpt", "--hubert-dir", str(tmp_path / "gone dir.v1")],
         str(tmp_path / "gone dir.v1")),  # before any checkpoint is read
        (["--lfg", str(models["lfg"]), "--a2v", str(models["recorded"]), "--features", "logmel"],
         "--features logmel, but the A2V checkpoint was trained on hubert features"),
        (["--lfg", str(models["lfg"]), "--a2v", str(models["bare"]), "--features", "logmel"],
         "log-mel feature is 80-d but the model expects 32"),
    ]
    for extra, message in cases:
        assert main(base + extra) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
