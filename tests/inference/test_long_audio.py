"""Long audio: refused with an estimate when it cannot fit, generated in cross-faded windows when asked, features and
frames in chunks, progress for every phase, and bounded peak memory over ten minutes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dawn_train.bench.generate import Models, portrait, speech_like, write_demo_models
from dawn_train.cli import main
from dawn_train.data.audio import LogMelSpec, log_mel, write_wav
from dawn_train.inference.audio_features import log_mel_chunked
from dawn_train.inference.generate import generate
from dawn_train.inference.memory import InsufficientMemory
from dawn_train.inference.pipeline import load_pipeline
from dawn_train.inference.pose_blink import PoseBlink
from dawn_train.models.a2v.conditioning import crossfade_weights, frame_noise, sample_windows, window_spans

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> SimpleNamespace:
    """Random models of the demo architecture (64 px, PBNets), a portrait and 6 s of speech-like audio."""
    work = tmp_path_factory.mktemp("long")
    models = write_demo_models(work)
    Image.fromarray(portrait(64)).save(work / "face.png")
    write_wav(str(work / "speech.wav"), speech_like(6.0))
    return SimpleNamespace(models=models, image=work / "face.png", audio=work / "speech.wav", work=work)


def options(models: Models, **kw) -> dict:
    return dict(lfg=models.lfg, a2v=models.a2v, pbnet_pose=models.pbnet_pose, pbnet_blink=models.pbnet_blink,
                steps=1, **kw)


# ---- windows ------------------------------------------------------------------------------------------------
def test_window_spans_cover_every_frame_with_overlap():
    for n, window, overlap in ((100, 30, 10), (101, 30, 10), (31, 30, 10), (250, 250, 50), (7, 30, 10), (90, 25, 0)):
        spans = window_spans(n, window, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(end - start == min(window, n) for start, end in spans)
        assert all(b[0] - a[0] > 0 and a[1] - b[0] >= overlap for a, b in zip(spans, spans[1:]))
    with pytest.raises(ValueError, match="overlap"):
        window_spans(100, 30, 30)


def test_frame_noise_depends_only_on_the_frame():
    a = frame_noise(3, 2, 10, 40, (1, 3, 4, 4))
    b = frame_noise(3, 2, 30, 60, (1, 3, 4, 4))
    assert a.shape == (1, 3, 30, 4, 4) and torch.equal(a[:, :, 20:], b[:, :, :10])
    assert not torch.equal(frame_noise(3, 1, 10, 40, (1, 3, 4, 4)), a)  # another draw, other noise
    assert not torch.equal(frame_noise(4, 2, 10, 40, (1, 3, 4, 4)), a)  # another seed


class WindowedFake:
    """A stand-in A2V-FDM whose samples are (frame noise of the window, which windows share) x 0.1 plus an offset
    of its own per window, +-0.5: windows that disagree on their shared frames, as real windows do."""

    def __init__(self):
        self.diffusion = SimpleNamespace(channels=3, sampling_timesteps=1)
        self.calls = []
        self.weight = torch.zeros(1)

    def parameters(self):
        return iter([self.weight])

    def sample(self, ref_fea, box, cond, *, noise, **kwargs):
        self.calls.append(cond.shape[1])
        offset = 0.5 if len(self.calls) % 2 else -0.5
        return 0.1 * noise[0] + offset


def test_windows_cross_fade_without_a_jump_at_the_seams():
    fake = WindowedFake()
    n, window, overlap = 200, 60, 20
    ref, cond = torch.zeros(1, 8, 2, 2), torch.zeros(1, n, 5)
    x0 = sample_windows(fake, ref, torch.zeros(1, 6), cond, window=window, overlap=overlap, seed=1, steps=1)
    spans = window_spans(n, window, overlap)
    assert x0.shape == (1, 3, n, 2, 2) and fake.calls == [window] * len(spans)
    noise = 0.1 * frame_noise(1, 0, 0, n, (1, 3, 2, 2))
    jumps = (x0[:, :, 1:] - x0[:, :, :-1]).abs().amax(dim=(0, 1, 3, 4))  # (n - 1,) largest change per frame step
    shared = torch.zeros(n - 1, dtype=torch.bool)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        shared[start - 1:end] = True
    own = (noise[:, :, 1:] - noise[:, :, :-1]).abs().amax(dim=(0, 1, 3, 4))  # changes within any one window
    assert jumps[shared].max() <= own.max()  # no seam jumps more than frames do within a window
    # the cross-fade spreads the +-0.5 disagreement over the shared frames: a hard cut would jump by ~1
    assert jumps.max() < 0.5
    # outside the shared frames the output is the window's own sample
    first_end, second_start = spans[0][1], spans[1][0]
    torch.testing.assert_close(x0[:, :, :second_start], noise[:, :, :second_start] + 0.5)
    w = crossfade_weights(first_end - second_start)[:, None, None]
    expected = noise[:, :, second_start:first_end] + torch.lerp(torch.tensor(0.5), torch.tensor(-0.5), w)
    torch.testing.assert_close(x0[:, :, second_start:first_end], expected)


# ---- features in chunks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_frames,chunk", [(101, 7), (100, 25), (3, 1), (50, 1500)])
def test_chunked_log_mel_equals_one_call(n_frames, chunk):
    audio = speech_like(n_frames / 25 - 0.013)  # slightly short: the last frame is zero-padded
    calls = []
    chunked = log_mel_chunked(audio, n_frames, LogMelSpec(), chunk=chunk, progress=calls.append)
    whole = log_mel(audio, n_frames, LogMelSpec())
    assert chunked.shape == whole.shape == (n_frames, 80) and sum(calls) == n_frames
    assert np.abs(chunked - whole).max() < 1e-4


# ---- generation -------------------------------------------------------------------------------------------------
def test_refused_with_an_estimate_then_generated_in_windows(demo, tmp_path, capsys):
    """A budget too small for one pass: refused before any work, naming the estimate, the longest audio that
    fits and a window length that fits; the same budget with --chunk-seconds works (and --max-seconds too)."""
    with pytest.raises(InsufficientMemory) as info:
        generate(demo.image, demo.audio, tmp_path / "a.mp4", progress=False, **options(demo.models, memory_budget=0.2))
    message = str(info.value)
    assert "150 frames in one pass" in message and "0.20 GiB is the --memory-budget" in message
    assert "--max-seconds" in message and "--chunk-seconds" in message and not (tmp_path / "a.mp4").exists()
    assert info.value.estimate.peak > 0.2 * 2 ** 30

    code = main(["generate", "--image", str(demo.image), "--audio", str(demo.audio), "--out", str(tmp_path / "b.mp4"),
                 "--lfg", demo.models.lfg, "--a2v", demo.models.a2v, "--steps", "1", "--memory-budget", "0.2",
                 "--quiet", "--json"])
    captured = capsys.readouterr()
    assert code == 1 and captured.err.count("dawn-train: error: this generation needs about") == 1
    assert json.loads(captured.out)["frames"] == 150

    summary = generate(demo.image, demo.audio, tmp_path / "c.mp4", progress=False,
                       **options(demo.models, memory_budget=0.2, chunk_seconds=1.0, chunk_overlap=0.4))
    assert summary["frames"] == 150 and summary["chunk_frames"] == 25 and summary["windows"] == 10
    assert summary["memory_estimate_bytes"] <= 0.2 * 2 ** 30 and (tmp_path / "c.mp4").stat().st_size > 0
    cut = generate(demo.image, demo.audio, tmp_path / "d.mp4", progress=False,
                   **options(demo.models, memory_budget=0.2, max_seconds=1.0))
    assert cut["frames"] == 25 and cut["windows"] == 1


def test_every_phase_shows_progress(demo, tmp_path, capsys):
    generate(demo.image, demo.audio, tmp_path / "p.mp4", max_seconds=1.0, **options(demo.models))
    err = capsys.readouterr().err
    for phase in ("audio features", "PBNet pose + blink", "DDIM (25 frames)", "decode + encode", "mux audio"):
        assert phase in err, phase
    generate(demo.image, demo.audio, tmp_path / "q.mp4", max_seconds=1.0, progress=False, **options(demo.models))
    assert "decode + encode" not in capsys.readouterr().err


def test_streamed_frames_equal_the_whole_video(demo):
    """decode_frames (chunk by chunk, uint8) gives the frames `Pipeline.animate` decodes at once."""
    pipe = load_pipeline(demo.models.lfg, demo.models.a2v)
    n = 12
    rng = np.random.default_rng(0)
    motion = PoseBlink(np.zeros((n, 6), np.float32), np.full((n, 2), 0.3, np.float32), np.zeros(6, np.float32),
                       np.full(2, 0.3, np.float32))
    feat = rng.normal(size=(n, 80)).astype(np.float32)
    ref = torch.as_tensor(portrait(64)).permute(2, 0, 1)[None].float() / 255
    box = pipe.face_box(64)
    video = pipe.animate(ref, box, feat, motion, seed=3, steps=1, decode_chunk=5)
    x0 = pipe.sample_motion(ref, box, pipe.condition(feat, motion), seed=3, steps=1)
    frames = np.concatenate(list(pipe.decode_frames(ref, x0, chunk=5)))
    whole = (video.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert frames.shape == (n, 64, 64, 3) and np.abs(frames.astype(int) - whole.astype(int)).max() <= 1


TEN_MINUTES_BOUND = 512 * 2 ** 20  # bytes a 10-minute generation adds to the loaded models: windows of 10 s, 32 px


def generate_in_child(args: list[str]) -> dict:
    """`dawn-train generate --json` in a fresh process: its summary, with the process's RSS once models and inputs
    were loaded and its peak RSS (VmHWM of that process image; `ru_maxrss` would count pytest's size at fork)."""
    proc = subprocess.run([sys.executable, "-m", "dawn_train.cli", "generate", *args, "--json", "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ten_minutes_in_windows_with_bounded_memory(demo, tmp_path):
    """Ten minutes of audio (15,000 frames), random demo-architecture models at 32 px, 1 DDIM step, windows of
    10 s: the generation adds less than 512 MiB to the loaded models (measured ~150 MiB), stays within 1.25 x
    its estimate, and hardly more than one minute does: memory does not grow with the length beyond what is
    held per frame (~5 KiB).  About 2 minutes on one core."""
    Image.fromarray(portrait(32)).save(tmp_path / "face.png")
    write_wav(str(tmp_path / "ten.wav"), speech_like(600.0))
    common = ["--image", str(tmp_path / "face.png"), "--audio", str(tmp_path / "ten.wav"), "--lfg", demo.models.lfg,
              "--a2v", demo.models.a2v, "--pbnet-pose", demo.models.pbnet_pose, "--pbnet-blink",
              demo.models.pbnet_blink, "--size", "32", "--steps", "1", "--chunk-seconds", "10"]
    minute = generate_in_child(common + ["--out", str(tmp_path / "minute.mp4"), "--max-seconds", "60"])
    ten = generate_in_child(common + ["--out", str(tmp_path / "ten.mp4")])
    added = {k: s["rss_peak_bytes"] - s["rss_before_bytes"] for k, s in (("minute", minute), ("ten", ten))}
    print(f"peak RSS {ten['rss_peak_bytes'] / 2 ** 20:.0f} MiB; added: 1 min {added['minute'] / 2 ** 20:.0f} MiB, "
          f"10 min {added['ten'] / 2 ** 20:.0f} MiB (estimate {ten['memory_estimate_bytes'] / 2 ** 20:.0f} MiB); "
          f"{ten['wall_seconds'] / 600:.2f} s per generated s")
    assert ten["frames"] == 15000 and ten["windows"] == 75
    assert added["ten"] < TEN_MINUTES_BOUND and added["ten"] < 1.25 * ten["memory_estimate_bytes"]
    assert added["ten"] - added["minute"] < 200 * 2 ** 20
