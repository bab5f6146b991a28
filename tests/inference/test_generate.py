"""`dawn-train generate`: portrait + speech -> playable mp4 with audio; seeds, long audio, the pose/blink
hook and clear errors for bad inputs."""
from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from dawn_train import checkpoints
from dawn_train.cli import main
from dawn_train.data.audio import AudioError, write_wav
from dawn_train.inference.generate import ImageError, audio_features, generate, load_audio, load_image
from dawn_train.inference.pose_blink import GenerationRequest, PoseBlink
from dawn_train.models.a2v import build_a2v

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is faster


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real face photo: scikit-image's astronaut (Eileen Collins), cropped to a non-square
    head-and-shoulders JPEG."""
    from PIL import Image
    from skimage.data import astronaut

    path = tmp_path_factory.mktemp("photo") / "face.jpg"
    Image.fromarray(astronaut()[0:240, 100:300]).save(path, quality=90)
    return path


def stereo_wav(path: Path, seconds: float, rate: int = 44100, amplitude: float = 0.3) -> Path:
    """Speech-like stereo PCM16 WAV at another sample rate (exercises downmix and resampling)."""
    t = np.arange(int(seconds * rate)) / rate
    signal = amplitude * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    pcm = (np.stack([signal, 0.5 * signal], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path


def read_mp4(path: Path) -> tuple[np.ndarray, float, str]:
    import av
    import decord

    frames = decord.VideoReader(str(path)).get_batch(list(range(len(decord.VideoReader(str(path)))))).asnumpy()
    with av.open(str(path)) as container:
        (audio,) = container.streams.audio
        seconds = float(audio.duration * audio.time_base)
        codec = audio.codec_context.name
    return frames, seconds, codec


@pytest.mark.slow
def test_generate_cli_writes_a_playable_mp4_with_audio(models, photo, tmp_path, capsys):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 1.23)
    out = tmp_path / "out.mp4"
    code = main(["generate", "--image", str(photo), "--audio", str(speech), "--out", str(out), "--lfg", str(lfg),
                 "--a2v", str(a2v), "--steps", "2", "--size", "64", "--seed", "1", "--quiet", "--no-crop"])
    assert code == 0
    assert "not square" in capsys.readouterr().err  # 200 x 240 is resized without cropping, and says so
    frames, seconds, codec = read_mp4(out)
    assert frames.shape == (int(1.23 * 25), 64, 64, 3)  # floor(seconds * 25) = 30
    assert codec == "aac" and abs(seconds - 30 / 25) < 0.05
    assert frames.std() > 1.0  # not a blank video


def test_generate_is_deterministic_for_a_seed_and_uses_the_pose_hook(models, photo, tmp_path):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.4)
    common = dict(lfg=str(lfg), a2v=str(a2v), steps=2, size=64, progress=False)
    paths = [tmp_path / f"{name}.mp4" for name in ("a", "b", "c", "d")]
    generate(photo, speech, paths[0], seed=5, **common)
    generate(photo, speech, paths[1], seed=5, **common)
    generate(photo, speech, paths[2], seed=6, **common)
    calls = []

    def pbnet_like(request: GenerationRequest) -> PoseBlink:
        calls.append(request)
        n = request.n_frames
        pose = np.zeros((n, 6), np.float32)
        pose[:, 0] = np.linspace(0, 30, n)  # turn the head by 30 degrees
        return PoseBlink(pose, np.full((n, 2), 0.3, np.float32), np.zeros(6, np.float32), np.full(2, 0.3, np.float32))

    summary = generate(photo, speech, paths[3], seed=5, pose_blink_source=pbnet_like, **common)
    a, b, c, d = (read_mp4(p)[0] for p in paths)
    assert summary["frames"] == 10 and len(calls) == 1 and calls[0].audio_feat.shape == (10, 80)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 0
    assert np.abs(a.astype(int) - d.astype(int)).max() > 0  # the hook's pose changed the video
    guided = generate(photo, speech, tmp_path / "guided.mp4", seed=5, guidance=2.0, **common)
    assert guided["guidance"] == 2.0 and summary["guidance"] == 1.0
    assert np.abs(a.astype(int) - read_mp4(tmp_path / "guided.mp4")[0].astype(int)).max() > 0
    with pytest.raises(ValueError, match="generate option guidance: must be > 0, got 0.0"):
        generate(photo, speech, tmp_path / "e.mp4", seed=5, guidance=0.0, **common)


@pytest.mark.slow
def test_long_audio_in_one_pass(models, photo, tmp_path):
    lfg, a2v = models
    speech = tmp_path / "long.wav"
    t = np.arange(24 * 16000) / 16000
    write_wav(str(speech), 0.3 * np.sin(2 * np.pi * 150 * t) * np.abs(np.sin(2 * np.pi * 2 * t)))
    out = tmp_path / "long.mp4"
    summary = generate(photo, speech, out, lfg=str(lfg), a2v=str(a2v), steps=1, size=64, window_size=80,
                       decode_chunk=100, progress=False)
    assert summary["frames"] == 600 and summary["window_size"] == 80
    frames, seconds, _ = read_mp4(out)
    assert len(frames) == 600 and abs(seconds - 24.0) < 0.05


def test_pose_and_blink_files(models, photo, tmp_path):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.4)
    common = dict(lfg=str(lfg), a2v=str(a2v), steps=1, size=64, progress=False)
    np.save(tmp_path / "pose7.npy", np.zeros((12, 7), np.float32))  # official 7-column layout: tz dropped
    np.save(tmp_path / "blink.npy", np.full((10, 2), 0.25, np.float32))
    generate(photo, speech, tmp_path / "ok.mp4", pose_from=str(tmp_path / "pose7.npy"),
             blink_from=str(tmp_path / "blink.npy"), **common)
    np.save(tmp_path / "short.npy", np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="4 pose rows, the audio needs 10 frames"):
        generate(photo, speech, tmp_path / "x.mp4", pose_from=str(tmp_path / "short.npy"), **common)
    np.save(tmp_path / "wide.npy", np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match=r"blink must have shape \(frames, 2\)"):
        generate(photo, speech, tmp_path / "x.mp4", blink_from=str(tmp_path / "wide.npy"), **common)


def test_image_checks(photo, tmp_path, caplog):
    from PIL import Image

    caplog.set_level(logging.INFO, logger="dawn_train")
    assert load_image(photo, 64).shape == (64, 64, 3)
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "gray.png", 64).shape == (64, 64, 3)
    assert load_image(tmp_path / "rgba.png", 64).shape == (64, 64, 3)
    err = caplog.text
    assert "converting L image to RGB" in err and "converting RGBA image to RGB (alpha dropped)" in err
    Image.fromarray(np.ones((40, 40), np.float32)).save(tmp_path / "float.tif")
    (tmp_path / "text.jpg").write_text("not an image")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    for name, message in [("float.tif", "mode 'F' is not supported"), ("text.jpg", "cannot be read as an image"),
                          ("tiny.png", "too small"), ("blank.png", "blank"), ("missing.png", "no such image")]:
        with pytest.raises(ImageError, match=message):
            load_image(tmp_path / name, 64)


def test_audio_checks(tmp_path):
    audio = load_audio(stereo_wav(tmp_path / "ok.wav", 0.5))
    assert audio.dtype == np.float32 and abs(len(audio) - 8000) <= 1
    write_wav(str(tmp_path / "silent.wav"), np.zeros(16000))
    write_wav(str(tmp_path / "short.wav"), 0.3 * np.ones(100))
    with wave.open(str(tmp_path / "empty.wav"), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
    (tmp_path / "text.wav").write_text("RIFF? no")
    for name, message in [("silent.wav", "silent"), ("short.wav", "shorter than one video frame"),
                          ("empty.wav", "shorter than one video frame|cannot decode"),
                          ("text.wav", "cannot decode"), ("missing.wav", "no such audio file")]:
        with pytest.raises(AudioError, match=message):
            load_audio(tmp_path / name)
    assert abs(len(load_audio(tmp_path / "ok.wav", max_seconds=0.25)) - 4000) <= 1
    for seconds in (0, -1.0):  # a negative end kept all but the last second
        with pytest.raises(AudioError, match=f"ok.wav: --max-seconds must be > 0, got {seconds:g}"):
            load_audio(tmp_path / "ok.wav", max_seconds=seconds)


def test_cli_reports_bad_inputs_in_one_line(models, photo, tmp_path, capsys):
    lfg, a2v = models
    (tmp_path / "text.wav").write_text("nope")
    code = main(["generate", "--image", str(photo), "--audio", str(tmp_path / "text.wav"), "--out",
                 str(tmp_path / "o.mp4"), "--lfg", str(lfg), "--a2v", str(a2v), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "dawn-train: error:" in err and "cannot decode audio" in err and "Traceback" not in err
    code = main(["generate", "--image", str(photo), "--audio", str(tmp_path / "text.wav"), "--out", "o.mp4"])
    assert code == 1 and "needs --lfg" in capsys.readouterr().err


def test_hubert_checkpoints_need_a_model_dir_or_precomputed_features():
    with pytest.raises(ValueError, match="--hubert-dir DIR .* --audio-feat-from"):
        audio_features(np.zeros(16000, np.float32), 25, None, 1024)
    feat = audio_features(0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 25,
                          {"type": "logmel", "dim": 80, "n_mels": 80}, 80)
    assert feat.shape == (25, 80) and feat.dtype == np.float32


def test_official_release_architecture_builds():
    with torch.device("meta"):
        model = build_a2v()
    assert model.unet.cond_dim == 1032 and model.unet.channels == 275
    # samples with +-40 frames (official win_width 40); trains with full attention, as the official code does
    assert model.eval().unet.half_width() == 40 and model.train().unet.half_width() is None


def tiny_pbnet(path: Path, pos_dim: int, eye_dim: int, kind: str, audio_dim: int = 80) -> Path:
    config = {"class_path": "dawn_train.models.pbnet.PBNet",
              "init_args": {"pos_dim": pos_dim, "eye_dim": eye_dim, "audio_dim": audio_dim, "pose_latent_dim": 8,
                            "audio_latent_dim": 16, "ff_size": 16, "num_heads": 4}}
    torch.manual_seed(1)
    return checkpoints.save_converted(checkpoints.build(config), config, kind, path)


def test_pbnet_drives_pose_and_blink_with_seeded_variety(models, photo, tmp_path):
    lfg, a2v = models
    pose_ckpt = tiny_pbnet(tmp_path / "pose.pt", 6, 0, "pbnet-pose")
    blink_ckpt = tiny_pbnet(tmp_path / "blink.pt", 0, 2, "pbnet-blink")
    speech = stereo_wav(tmp_path / "speech.wav", 0.4)
    common = dict(lfg=str(lfg), a2v=str(a2v), steps=1, size=64, progress=False, pbnet_pose=str(pose_ckpt),
                  pbnet_blink=str(blink_ckpt))
    with pytest.raises(ValueError, match="give --init-pose and --init-blink"):
        generate(photo, speech, tmp_path / "x.mp4", seed=1, crop=False, **common)  # a converted A2V file
        # records no mean state, and an uncropped image is not measured
    init = dict(init_pose=[0, 0, 0, 0.6, 32, 32], init_blink=[0.3, 0.3])
    seen = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate(photo, speech, tmp_path / f"{name}.mp4", seed=seed, **common, **init)
        seen.append(read_mp4(tmp_path / f"{name}.mp4")[0].astype(int))
    assert np.array_equal(seen[0], seen[1])
    assert np.abs(seen[0] - seen[2]).max() > 0  # another seed, another head motion
    # one PBNet, the other part from a file or held at the reference state
    blinks = tmp_path / "driving blinks.v1.npy"
    np.save(blinks, np.full((100, 2), 0.25, np.float32))
    mixed = generate(photo, speech, tmp_path / "y.mp4", lfg=str(lfg), a2v=str(a2v), pbnet_pose=str(pose_ckpt), steps=1,
                     size=64, progress=False, seed=1, blink_from=str(blinks), **init)
    assert (mixed["pose_from"], mixed["blink_from"]) == ("pbnet", "file")
    held = generate(photo, speech, tmp_path / "w.mp4", lfg=str(lfg), a2v=str(a2v), pbnet_blink=str(blink_ckpt), steps=1,
                    size=64, progress=False, seed=1, **init)
    assert (held["pose_from"], held["blink_from"]) == ("held", "pbnet")
    hubert_blink = tiny_pbnet(tmp_path / "blink.hubert.pt", 0, 2, "pbnet-blink", audio_dim=1024)
    with pytest.raises(ValueError, match=r"blink.hubert.pt: this PBNet reads 1024-d audio features, the A2V-FDM .* 80-d"):
        generate(photo, speech, tmp_path / "z.mp4", **{**common, "pbnet_blink": str(hubert_blink)}, **init)


def test_options_from_yaml_flags_and_python_are_one(models, photo, tmp_path):
    """GenerateOptions is the one spelling: the same options as YAML, as flags and as keywords give the same
    options and the same video."""
    import yaml

    from dawn_train.cli import build_parser
    from dawn_train.inference.generate import GenerateOptions

    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.3)
    values = dict(lfg=str(lfg), a2v=str(a2v), seed=7, steps=1, size=64, window_size=80, decode_chunk=8,
                  face_box=[10.0, 8.0, 54.0, 60.0], use_ema=False, crop=False)
    config = tmp_path / "generate.yaml"
    config.write_text(yaml.safe_dump(values))
    flags = ["--lfg", str(lfg), "--a2v", str(a2v), "--seed", "7", "--steps", "1", "--size", "64", "--window-size", "80",
             "--decode-chunk", "8", "--face-box", "10", "8", "54", "60", "--no-use-ema", "--no-crop"]
    io = ["generate", "--image", str(photo), "--audio", str(speech), "--quiet"]
    parser = build_parser()
    from_yaml = GenerateOptions.from_namespace(parser.parse_args([*io, "--out", "a.mp4", "--config", str(config)]),
                                               config)
    from_flags = GenerateOptions.from_namespace(parser.parse_args([*io, "--out", "b.mp4", *flags]))
    assert from_yaml == from_flags == GenerateOptions(**values)
    assert main([*io, "--out", str(tmp_path / "a.mp4"), "--config", str(config)]) == 0
    assert main([*io, "--out", str(tmp_path / "b.mp4"), *flags]) == 0
    generate(photo, speech, tmp_path / "c.mp4", progress=False, **values)
    a, b, c = (read_mp4(tmp_path / f"{name}.mp4")[0] for name in "abc")
    assert np.array_equal(a, b) and np.array_equal(a, c)
    # a flag overrides the YAML; an unknown YAML key is named with its file
    assert GenerateOptions.resolve(config, seed=9).seed == 9
    (tmp_path / "bad.yaml").write_text("lfg: x\nsteps_typo: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key\(s\) \['steps_typo'\]"):
        GenerateOptions.resolve(tmp_path / "bad.yaml")


def test_output_is_checked_before_any_work(models, photo, tmp_path):
    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.3)
    for out, message in ((tmp_path, "is a directory"), (tmp_path / "x.avi", "name it with .mp4")):
        with pytest.raises(ValueError, match=message):
            generate(photo, speech, out, lfg=str(lfg), a2v=str(a2v), progress=False)


def test_window_size_none_samples_with_full_attention(models, photo, tmp_path, capsys):
    """`--window-size none` (YAML null) asks for full temporal attention; no flag keeps the checkpoint's window
    (80 here); a narrow window gives another video."""
    import json

    from dawn_train.inference.generate import GenerateOptions
    from dawn_train.inference.options import window_arg

    lfg, a2v = models
    speech = stereo_wav(tmp_path / "speech.wav", 0.6)  # 15 frames
    io = ["generate", "--image", str(photo), "--audio", str(speech), "--lfg", str(lfg), "--a2v", str(a2v), "--steps",
          "1", "--size", "64", "--quiet", "--json"]
    windows = {}
    for name, flags in (("full", ["--window-size", "none"]), ("default", []), ("narrow", ["--window-size", "2"])):
        assert main([*io, "--out", str(tmp_path / f"{name}.mp4"), *flags]) == 0
        windows[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["window_size"]
    assert windows == {"full": None, "default": 80, "narrow": 2}
    full, narrow = (read_mp4(tmp_path / f"{name}.mp4")[0].astype(int) for name in ("full", "narrow"))
    assert np.abs(full - narrow).max() > 0
    (tmp_path / "g.yaml").write_text("window_size: null\n")
    assert GenerateOptions.resolve(tmp_path / "g.yaml").window_size is None and GenerateOptions().window_size == "checkpoint"
    assert [window_arg(w) for w in ("NONE", "null", "full", "40", "checkpoint")] == ["none"] * 3 + [40, "checkpoint"]
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error
        main([*io, "--out", str(tmp_path / "bad.mp4"), "--window-size", "wide"])
    assert exit_info.value.code == 2 and "'none' (full attention)" in capsys.readouterr().err


KIND_FLAGS = {"lfg": "--lfg", "a2v": "--a2v", "pbnet-pose": "--pbnet-pose", "pbnet-blink": "--pbnet-blink"}


def checkpoints_of_every_kind(lfg: Path, a2v: Path, work: Path) -> dict[str, Path]:
    return {"lfg": lfg, "a2v": a2v, "pbnet-pose": tiny_pbnet(work / "pose.pt", 6, 0, "pbnet-pose"),
            "pbnet-blink": tiny_pbnet(work / "blink.pt", 0, 2, "pbnet-blink")}


def wrong_kinds(files: dict[str, Path]):
    """(option's kind, the kind given instead, files with that swap) for every wrong file of every option."""
    for kind in files:
        for wrong in files:
            if wrong != kind:
                yield kind, wrong, {**files, kind: files[wrong]}


def test_every_wrong_kind_of_checkpoint_is_refused_in_one_line(models, photo, tmp_path, capsys):
    files = checkpoints_of_every_kind(*models, tmp_path)
    speech = stereo_wav(tmp_path / "speech.wav", 0.3)
    for kind, wrong, given in wrong_kinds(files):
        options = [w for k, flag in KIND_FLAGS.items() for w in (flag, str(given[k]))]
        code = main(["generate", "--image", str(photo), "--audio", str(speech), "--out", str(tmp_path / "o.mp4"),
                     *options, "--quiet"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err, (kind, wrong, err[-2000:])
        (line,) = [line for line in err.splitlines() if line.startswith("dawn-train: error:")]
        assert f"{files[wrong]}: holds a '{wrong}' checkpoint, expected '{kind}'" in line
    assert not (tmp_path / "o.mp4").exists()
