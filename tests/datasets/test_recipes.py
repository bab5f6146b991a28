"""The dataset READMEs' commands, run as written on a small stand-in of each raw layout: the blocks after
`<!-- recipe: local` (and `<!-- recipe: slurm`, on the one-node cluster) in datasets/*/README.md."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytest.importorskip("mediapipe", reason="the prep extra (pip install 'dawn-train[prep]') is not installed")


def recipe(dataset: str, kind: str) -> str:
    """The bash block that follows the `<!-- recipe: KIND` marker of datasets/DATASET/README.md."""
    text = (REPO / "datasets" / dataset / "README.md").read_text()
    match = re.search(rf"<!-- recipe: {kind}\b.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"datasets/{dataset}/README.md has no '<!-- recipe: {kind}' block"
    return match.group(1)


def write_video(path: Path, seconds: float, fps: int, seed: int) -> None:
    """The animated astronaut with speech, at `fps`, in the container the suffix names (mp4 or flv)."""
    import av
    from skimage.data import astronaut

    from dawn_train.data.prep.animate import PhotoAnimation, known_motion
    from dawn_train.data.synth import speech_audio

    n = int(seconds * fps)
    animation = PhotoAnimation(np.ascontiguousarray(astronaut()[0:260, 100:330]), known_motion(n, canvas=240), (240, 320))
    audio = speech_audio(np.random.default_rng(seed), seconds, 150.0)
    with av.open(str(path), "w", format=path.suffix[1:]) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for frame in animation:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        for start in range(0, len(audio), 1024):
            chunk = av.AudioFrame.from_ndarray(audio[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))


RAW = {  # dataset -> its raw layout: (path, seconds, fps); HDTF at 25 and 30 fps, CREMA-D flv at 30 fps
    "hdtf": [("datasets/hdtf/raw/WRA_KristiNoem2_000.mp4", 2.0, 25), ("datasets/hdtf/raw/RD_Radio30_000.mp4", 2.0, 30)],
    "crema": [("datasets/crema/raw/VideoFlash/1001_DFA_ANG_XX.flv", 1.6, 30),
              ("datasets/crema/raw/VideoFlash/1064_IEO_HAP_LO.flv", 1.6, 30)],
}


@pytest.fixture
def workdir(tmp_path, request) -> Path:
    """A checkout-like folder (slurm/ linked) holding the stand-in raw videos of the dataset parameter."""
    work = tmp_path / "work dir.x"
    work.mkdir()
    (work / "slurm").symlink_to(REPO / "slurm")
    for index, (relative, seconds, fps) in enumerate(RAW[request.param]):
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        write_video(work / relative, seconds, fps, index)
    return work


def run_block(block: str, work: Path, timeout: float, **env) -> str:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "OMP_NUM_THREADS": "1", "DAWN_TRAIN": f"{sys.executable} -m dawn_train.cli", **env}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=environment, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{block}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def check_shards(work: Path, shards: str, videos: int) -> None:
    manifest = json.loads((work / shards / "manifest.json").read_text())
    assert manifest["frame_size"] == 128 and not manifest["failed_videos"]
    assert sum(split["videos"] for split in manifest["splits"].values()) == videos


@pytest.mark.slow  # about a minute each on 2 cores (worker start-up, mediapipe, shards, inspect)
@pytest.mark.parametrize("workdir, shards", [("hdtf", "datasets/hdtf/shards_128"), ("crema", "datasets/crema/shards")],
                         indirect=["workdir"])
def test_local_recipe(workdir, shards):
    dataset = shards.split("/")[1]
    out = run_block(recipe(dataset, "local"), workdir, timeout=600)
    assert "2 done, 0 skipped" in out and "0 failed of 2 videos" in out and "all samples valid" in out
    check_shards(workdir, shards, 2)
    meta = json.loads(next((workdir / "datasets" / dataset / "prepared").glob("*.json")).read_text())
    assert meta["fps"] == 25 and meta["source_fps"] in (25.0, 30.0)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("workdir, shards", [("hdtf", "datasets/hdtf/shards_128"), ("crema", "datasets/crema/shards")],
                         indirect=["workdir"])
def test_slurm_recipe(workdir, shards):
    from dawn_train.launch import slurm
    from tests.launch.test_slurm import start_cluster

    start_cluster()
    out = run_block(recipe(shards.split("/")[1], "slurm"), workdir, timeout=120, TASKS="2")
    job = out.split()[-1]  # the shards job, submitted last
    states = slurm.wait(job, timeout=600)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((workdir / "logs").glob("*.out")))
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs}"
    check_shards(workdir, shards, 2)
