"""HuBERT features (`data/hubert.py`) with a tiny randomly initialised HubertModel saved to a local directory: one
row per video frame, the official window tiling, batching, and the errors for a missing or wrong directory."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dawn_train.cli import main
from dawn_train.data.audio import audio_feature, n_video_frames
from dawn_train.data.hubert import KERNEL, STRIDE, HubertFeatures, hubert_windows, to_video_rate
from tests.conftest import TINY_HUBERT_DIM

pytestmark = pytest.mark.usefixtures("one_thread")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * 150 * t) * np.abs(np.sin(2 * np.pi * 2 * t)) + 0.02 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def hubert(tiny_hubert) -> HubertFeatures:
    return HubertFeatures(tiny_hubert, window_frames=100, batch_size=2, device="cpu")


@pytest.mark.parametrize("samples", [300, 640, 16000, 37520, 16000 * 5 + 123])
def test_one_row_per_video_frame(hubert, samples):
    """From less than one conv kernel (zero-padded to one) to several windows with a short tail."""
    audio = speech_like(samples / 16000)
    rows = hubert.hidden_rows(audio)
    assert rows.shape == (max(1, (max(samples, KERNEL) - (KERNEL - STRIDE)) // STRIDE), TINY_HUBERT_DIM)
    n_frames = max(1, n_video_frames(samples))
    ticks = []
    feat = hubert.compute(audio, n_frames, progress=ticks.append)
    assert feat.shape == (n_frames, TINY_HUBERT_DIM) and feat.dtype == np.float32 and np.isfinite(feat).all()
    assert sum(ticks) == n_frames
    assert hubert.describe()["dim"] == TINY_HUBERT_DIM


def test_windows_tile_the_conv_front_end_exactly(hubert):
    """Each window is 80 samples longer than its step: the conv rows of the windows, joined, are those of one
    pass over the whole audio."""
    audio = speech_like(6.3)
    values = torch.from_numpy(hubert.extractor(audio, sampling_rate=16000, return_tensors="np").input_values[0])
    conv = hubert.model.feature_extractor
    with torch.no_grad():
        whole = conv(values[None].float())[0]
        joined = torch.cat([conv(values[None, a:b].float())[0] for a, b in hubert_windows(len(values), 100)], dim=1)
    assert joined.shape == whole.shape and (joined - whole).abs().max() < 1e-5


def test_windows_match_one_pass_away_from_the_seams(hubert, tiny_hubert):
    """Six seconds in 2-s windows (the official tiling, 20 s there) against one pass: the transformer of a window
    sees only its window, so rows within the positional conv's reach of a seam differ (as in the official
    features); the others agree within 5 % of the features' spread.  Batching changes nothing."""
    audio = speech_like(6.0)
    one_pass = HubertFeatures(tiny_hubert, window_frames=10 ** 6, device="cpu").hidden_rows(audio)
    windowed = hubert.hidden_rows(audio)
    assert windowed.shape == one_pass.shape == (299, TINY_HUBERT_DIM)
    reach = hubert.model.config.num_conv_pos_embeddings // 2
    rows = torch.arange(len(one_pass))
    seam_distance = torch.stack([(rows - seam).abs() for seam in (100, 200)]).amin(0)
    far = seam_distance >= reach
    difference = (windowed - one_pass).abs()
    assert difference[far].max() < 0.05 * one_pass.std()
    assert difference[~far].max() > difference[far].max()  # the seams are where the windows show
    unbatched = HubertFeatures(tiny_hubert, window_frames=100, batch_size=1, device="cpu").hidden_rows(audio)
    assert torch.allclose(unbatched, windowed, atol=1e-5)


def test_interpolation_is_the_official_linear_resampling():
    from scipy.interpolate import interp1d

    rows = torch.randn(7, 3, dtype=torch.float64)
    for n_frames in (1, 4, 7, 13):
        official = interp1d(np.arange(7), rows.numpy(), kind="linear", axis=0)(np.linspace(0, 6, n_frames))
        assert np.allclose(to_video_rate(rows, n_frames).numpy(), official)
    assert torch.equal(to_video_rate(rows[:1], 5), rows[:1].expand(5, 3))


def test_missing_or_wrong_model_dir_fails_at_once_naming_it(tmp_path, capsys):
    missing = tmp_path / "no such.dir" / "hubert-large-ls960-ft"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        HubertFeatures(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        audio_feature("hubert", tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "wav2vec2"}')
    with pytest.raises(ValueError, match="model_type is 'wav2vec2'"):
        HubertFeatures(tmp_path / "empty")
    with pytest.raises(ValueError, match="--hubert-dir"):
        audio_feature("hubert")
    out = tmp_path / "shards"
    code = main(["data", "shards", "--src", str(tmp_path / "src"), "--out", str(out), "--features", "hubert",
                 "--hubert-dir", str(missing)])
    err = capsys.readouterr().err
    assert code != 0 and str(missing) in err and "Traceback" not in err
    assert not out.exists()  # failed before anything was listed or written


def test_missing_hubert_extra_is_one_line(tmp_path, monkeypatch, capsys):
    """Without transformers (blocked here), `--features hubert` says which extra to install, in one line."""
    import sys

    model = tmp_path / "hubert-large-ls960-ft"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "hubert"}')
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match=re.escape("HuBERT features need transformers")):
        HubertFeatures(model)
    out = tmp_path / "shards"
    code = main(["data", "shards", "--src", str(tmp_path / "src"), "--out", str(out), "--features", "hubert",
                 "--hubert-dir", str(model)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("dawn-train: error: HuBERT features need transformers") and "pip install 'dawn-train[hubert]'" in err
    assert not out.exists()


def test_spec_names_the_model_and_its_hash(tiny_hubert, tmp_path):
    import shutil

    spec = HubertFeatures(tiny_hubert, device="cpu").describe()
    assert spec["type"] == "hubert" and spec["model"] == "hubert tiny.v1" and spec["window_frames"] == 1000
    copy = tmp_path / "copy"
    shutil.copytree(tiny_hubert, copy)
    assert HubertFeatures(copy, device="cpu").describe()["model_sha1"] == spec["model_sha1"]  # content, not place
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert HubertFeatures(copy, device="cpu").describe()["model_sha1"] != spec["model_sha1"]


def test_shards_with_hubert_features_are_written_read_back_and_checked(synth_raw, tiny_hubert, tmp_path, caplog):
    """Log-mel shards, then HuBERT shards in the same directory: rebuilt from scratch (the feature is part of the
    build), stored rows equal the features of the whole video cut into chunks, the stream reads them, and a
    config asking for the other feature fails at set-up."""
    import logging

    from dawn_train.data import schema
    from dawn_train.data.audio import read_wav
    from dawn_train.data.datamodule import PBNetDataModule
    from dawn_train.data.sample import parse_sample
    from dawn_train.data.shards import inspect_shards, iter_tar, write_shards
    from tests.data.conftest import copy_videos

    src, out = tmp_path / "raw", tmp_path / "shards"
    copy_videos(synth_raw, src, {"synth00000": "v0", "synth00001": "v1", "synth00002": "v2"})
    common = dict(val_fraction=0.34, samples_per_shard=1, chunk_frames=30, progress=False)
    write_shards(src, out, **common)
    caplog.set_level(logging.WARNING, logger="dawn_train")
    hubert = HubertFeatures(tiny_hubert, batch_size=2, device="cpu")
    manifest = write_shards(src, out, feature=hubert, **common)
    assert "rebuilding from scratch" in caplog.text and "feature {'type': 'logmel'" in caplog.text
    assert manifest["feature"] == hubert.describe() and manifest["build"]["options"]["feature"]["type"] == "hubert"

    chunks: dict[str, list] = {}
    for tar in sorted(out.glob("*.tar")):
        for raw in iter_tar(tar, []):
            sample = parse_sample(raw, (schema.AUDIO_FEAT, schema.META), feature_dim=TINY_HUBERT_DIM)
            chunks.setdefault(sample["meta"]["source_file"][:-4], []).append(
                (sample["meta"]["chunk"], sample[schema.AUDIO_FEAT]))
    assert sorted(chunks) == ["v0", "v1", "v2"]
    stored = np.concatenate([rows for _, rows in sorted(chunks["v1"], key=lambda c: c[0])])
    expected = hubert.compute(read_wav(src / "v1.wav"), len(stored)).astype(np.float16)
    assert len(chunks["v1"]) == 2 and np.array_equal(stored, expected)
    assert inspect_shards(out, progress=False)["bad"] == []

    data = PBNetDataModule(str(out), window=20, batch_size=1, num_workers=0, clips_per_epoch=1, shuffle_buffer=1,
                           audio_feature="hubert")
    data.setup()
    assert next(iter(data.train_dataloader()))["audio_feat"].shape == (1, 20, TINY_HUBERT_DIM)
    with pytest.raises(ValueError, match=r"hold hubert audio features, the config asks for logmel "
                                         r"\(data.init_args.audio_feature\)"):
        PBNetDataModule(str(out), audio_feature="logmel").setup()
