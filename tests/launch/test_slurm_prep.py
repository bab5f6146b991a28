"""`slurm/prep.sbatch`: a 2-task `dawn-train data prep` array on the one-node cluster prepares every video
of a list exactly once (tests/launch/test_slurm.py starts the cluster)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dawn_train.launch import slurm
from tests.conftest import require_module
from tests.launch.test_slurm import JOB_TIMEOUT, cluster, job_env  # noqa: F401 - fixtures

from .conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_prep_array_prepares_each_video_once(cluster, job_env, tmp_path):  # noqa: F811
    require_module("mediapipe")
    from skimage.data import astronaut

    from dawn_train.data.prep.animate import PhotoAnimation, known_motion
    from dawn_train.data.synth import speech_audio
    from dawn_train.data.video import encode_mp4

    raw = tmp_path / "raw videos"
    raw.mkdir()
    photo = np.ascontiguousarray(astronaut()[0:260, 100:330])
    animation = PhotoAnimation(photo, known_motion(40, canvas=200, blinks=(10,)), (200, 240))
    audio = speech_audio(np.random.default_rng(0), 40 / 25, 150.0)
    names = ["a_000", "b_001", "c_002"]
    for name in names:
        (raw / f"{name}.mp4").write_bytes(encode_mp4(animation, audio=audio))
    listing = tmp_path / "raw.txt"
    listing.write_text("".join(f"{raw / name}.mp4\n" for name in names))
    out, log = tmp_path / "prepared", tmp_path / "prep-%a.out"
    job = slurm.sbatch(REPO / "slurm" / "prep.sbatch", args=[str(listing), str(out), "--size", "64"], cwd=str(REPO),
                       options=["--array=0-1", "--cpus-per-task=1", "--time=20", f"--output={log}", "--job-name=dawn-prep"])
    try:
        states = slurm.wait(job, timeout=JOB_TIMEOUT)
    except TimeoutError:
        slurm.cancel(job)
        raise
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("prep-*.out")))
    assert sorted(states) == [f"{job}_0", f"{job}_1"] and set(states.values()) == {"COMPLETED"}, f"{states}\n{logs}"
    assert "prep slice 0/2: 2 done" in logs and "prep slice 1/2: 1 done" in logs
    for name in names:
        assert json.loads((out / f"{name}.json").read_text())["n_frames"] == 40
    assert not (out / "failures.jsonl").exists()
