"""The dataset READMEs' commands, run as written on a small stand-in of each raw layout: the blocks after
`<!-- recipe: local` (and `<!-- recipe: slurm`, on the one-node cluster) in datasets/*/README.md.

The stand-in is a checkout-like folder: slurm/ and the official split lists of datasets/ as in the repository,
raw videos named as the real ones (HDTF: an id of test_ids.txt, one of excluded_ids.txt and two others; CREMA-D:
a test speaker's clip and clips of two other speakers, one with two clips), and the README's HuBERT directory
`weights/hubert-large-ls960-ft` pointing at the tiny random HuBERT of tests/conftest.py.  The shards must hold
the official split: test ids in test shards only, excluded ids nowhere, CREMA-D speakers in one split each."""
from __future__ import annotations

import json
import os
import re
import shutil
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, require_module

require_module("mediapipe")


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
    "hdtf": [("datasets/hdtf/raw/WRA_KristiNoem2_000.mp4", 1.6, 25),  # excluded_ids.txt
             ("datasets/hdtf/raw/RD_Radio30_000.mp4", 1.6, 30),  # test_ids.txt
             ("datasets/hdtf/raw/WDA_BernieSanders_000.mp4", 1.2, 25), ("datasets/hdtf/raw/WDA_JoeBiden_000.mp4", 1.2, 30)],
    "crema": [("datasets/crema/raw/VideoFlash/1001_DFA_ANG_XX.flv", 1.6, 30),
              ("datasets/crema/raw/VideoFlash/1001_IEO_HAP_LO.flv", 1.2, 30),
              ("datasets/crema/raw/VideoFlash/1002_DFA_SAD_XX.flv", 1.2, 30),
              ("datasets/crema/raw/VideoFlash/1064_IEO_HAP_LO.flv", 1.6, 30)],  # s64 of test_speakers.txt
}
# dataset -> (videos prepared, test video ids, excluded video ids)
EXPECTED = {"hdtf": (4, {"RD_Radio30_000"}, {"WRA_KristiNoem2_000"}), "crema": (4, {"1064_IEO_HAP_LO"}, set())}


@pytest.fixture
def workdir(tmp_path, request, tiny_hubert) -> Path:
    """A checkout-like folder (slurm/ linked, the split lists copied, the README's HuBERT directory linked to the
    tiny HuBERT) holding the stand-in raw videos of the dataset parameter."""
    work = tmp_path / "work dir.x"
    (work / "datasets").mkdir(parents=True)
    (work / "slurm").symlink_to(REPO / "slurm")
    (work / "datasets" / request.param).mkdir()
    for listing in (REPO / "datasets" / request.param).glob("*.txt"):
        shutil.copy(listing, work / "datasets" / request.param / listing.name)
    (work / "weights").mkdir()
    (work / "weights" / "hubert-large-ls960-ft").symlink_to(tiny_hubert, target_is_directory=True)
    for index, (relative, seconds, fps) in enumerate(RAW[request.param]):
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        write_video(work / relative, seconds, fps, index)
    return work


def run_block(block: str, work: Path, timeout: float, **env) -> str:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "OMP_NUM_THREADS": "1", "DAWN_TRAIN": shlex.join([sys.executable, "-m", "dawn_train.cli"]), **env}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=environment, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{block}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def videos_by_split(shards: Path) -> dict[str, set[str]]:
    """split -> the video ids of the samples in its tar files (read from each sample's json, not the manifest)."""
    found: dict[str, set[str]] = {}
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    assert path.name.startswith(f"{meta['split']}-"), (path.name, meta["split"])
                    found.setdefault(meta["split"], set()).add(meta["video_id"])
    return found


def check_shards(work: Path, shards: str, dataset: str) -> None:
    """The shards of the recipe: 128 px, tiny-HuBERT features, and the official split (module docstring)."""
    from dawn_train.data.splits import speaker_of
    from tests.conftest import TINY_HUBERT_DIM

    videos, test, excluded = EXPECTED[dataset]
    manifest = json.loads((work / shards / "manifest.json").read_text())
    assert manifest["frame_size"] == 128 and not manifest["failed_videos"]
    assert manifest["feature"]["type"] == "hubert" and manifest["feature"]["dim"] == TINY_HUBERT_DIM
    assert sum(split["videos"] for split in manifest["splits"].values()) == videos - len(excluded)
    assert sorted(manifest["split"]["excluded"]) == sorted(excluded) and manifest["split"]["files"]
    split = videos_by_split(work / shards)
    assert split["test"] == test and set(split) <= {"train", "val", "test"}
    assert not excluded & set().union(*split.values())  # excluded ids in no shard at all
    assert not test & (split["train"] | split.get("val", set()))
    assert len(set().union(*split.values())) == videos - len(excluded)
    if dataset == "crema":  # speaker-disjoint: every speaker's clips in one split
        speakers = {name: {speaker_of(v) for v in ids} for name, ids in split.items()}
        assert speakers["test"] == {"1064"} and split["val"], speakers
        names = sorted(speakers)
        assert all(not speakers[a] & speakers[b] for a in names for b in names if a < b), speakers


@pytest.mark.slow  # about a minute each on 2 cores (worker start-up, mediapipe, shards, HuBERT, inspect)
@pytest.mark.parametrize("workdir, shards", [("hdtf", "datasets/hdtf/shards_128"), ("crema", "datasets/crema/shards")],
                         indirect=["workdir"])
def test_local_recipe(workdir, shards):
    dataset = shards.split("/")[1]
    block = recipe(dataset, "local")
    assert "--split-file" in block and "--hubert-dir weights/hubert-large-ls960-ft" in block
    out = run_block(block, workdir, timeout=600)
    assert "4 done, 0 skipped" in out and "0 failed of 4 videos" in out and "all samples valid" in out
    check_shards(workdir, shards, dataset)
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
    check_shards(workdir, shards, shards.split("/")[1])
