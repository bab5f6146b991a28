"""Real SLURM jobs on a one-node cluster (started by scripts/slurm_cluster.sh when missing; root only):
a 2-task srun DDP training, a sweep array, and a job requeued mid-run that resumes its step count."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from dawn_train.launch import slurm
from dawn_train.launch.sweep import run_sweep
from tests.conftest import skip_unless_ci

from .conftest import REPO, dawn_env, tiny_lfg_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = REPO / "scripts" / "slurm_cluster.sh"
JOB_TIMEOUT = 480  # seconds per job: Lightning start-up is ~20 s per process on 2 loaded cores


def start_cluster() -> None:
    """Use the cluster that answers, else start one (root only).  Without root the tests skip, except
    under CI (`CI=true`), where they fail: CI must not go green without running them."""
    if shutil.which("sinfo") and subprocess.run([str(CLUSTER), "--status"], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0:
        skip_unless_ci("no SLURM cluster answers and this user is not root, so scripts/slurm_cluster.sh cannot "
                       "start one")
    proc = subprocess.run([str(CLUSTER)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm_cluster.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def cluster():
    start_cluster()


@pytest.fixture
def job_env(monkeypatch):
    """sbatch passes the submitting environment to the job: our python, offline W&B."""
    for key, value in dawn_env().items():
        monkeypatch.setenv(key, value)


def submit_train(args: list[str], log: Path, tasks: int, name: str) -> str:
    return slurm.sbatch(REPO / "slurm" / "train.sbatch", args=args, cwd=str(REPO), options=[
        "--gpus-per-node=0", f"--ntasks-per-node={tasks}", "--cpus-per-task=1", "--time=20", f"--output={log}",
        f"--job-name={name}"])


def wait_done(job: str, log: Path) -> dict:
    try:
        states = slurm.wait(job, timeout=JOB_TIMEOUT)
    except TimeoutError:
        slurm.cancel(job)
        raise
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{log.read_text()[-4000:] if log.exists() else ''}"
    return states


def ranks(run_dir: Path, world: int) -> list[dict]:
    return [json.loads((run_dir / "ranks" / f"rank-{r}.json").read_text()) for r in range(world)]


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*"))


def test_srun_two_task_ddp_training(cluster, job_env, synth_shards, tmp_path):
    run = tmp_path / "ddp"
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, run, max_steps=6, every_n=3, validate=True)
    log = tmp_path / "ddp.out"
    job = submit_train(["-c", str(config), "--trainer.callbacks+=dawn_train.launch.callbacks.ScaleReport"], log,
                       tasks=2, name="dawn-test-ddp")
    wait_done(job, log)
    text = log.read_text()
    assert "2 tasks" in text and "MEMBER: 2/2" in text
    r0, r1 = ranks(run, 2)
    assert r0["train_batches"] == r1["train_batches"] == 6 and r0["val_batches"] == r1["val_batches"] == 1
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["cluster_environment"] == "SLURMEnvironment" and hparams["world_size"] == 2
    assert hparams["effective_batch_size"] == 8
    assert (run / "checkpoints" / "last.ckpt").is_file() and offline_runs(run)


def test_sweep_array_runs_every_point(cluster, job_env, synth_shards, tmp_path, monkeypatch):
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, tmp_path / "runs" / "lfg", max_steps=3, every_n=3)
    work = tmp_path / "My Projects.v2"  # submitted from a folder with a space, into one: the job's --chdir, --output
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "sweep runs" / "lfg-lr"
    sweep = {"name": "lfg-lr", "configs": [str(config)], "grid": {"model.init_args.lr": [0.001, 0.003]},
             "out_dir": str(out), "slurm": {"cpus_per_task": 1, "time": "20"}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    summary = run_sweep(path, submit=True)
    job = summary["job"]
    assert job and summary["to_run"] == [0, 1]
    states = slurm.wait(job, timeout=JOB_TIMEOUT)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((out / "logs").glob("*.out")))
    assert sorted(states) == [f"{job}_0", f"{job}_1"] and set(states.values()) == {"COMPLETED"}, f"{states}\n{logs}"
    record = json.loads((out / "sweep.json").read_text())
    for point, lr in zip(record["points"], (0.001, 0.003)):
        assert (out / "status" / f"{point['index']:03d}").read_text().startswith("done 0")
        run = Path(point["run_dir"])
        assert (run / "checkpoints" / "last.ckpt").is_file() and offline_runs(run)
        used = yaml.safe_load((run / "config.yaml").read_text())  # what the run itself saved
        wandb = used["trainer"]["logger"][0]["init_args"]
        assert wandb["group"] == "lfg-lr" and f"lr={lr}" in wandb["tags"] and used["model"]["init_args"]["lr"] == lr
    # nothing failed: --only-failed has nothing to resubmit
    assert run_sweep(path, submit=True, only_failed=True)["to_run"] == []


def test_requeued_job_resumes_from_its_checkpoint(cluster, job_env, synth_shards, tmp_path):
    run = tmp_path / "requeue"
    steps = 40
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, run, max_steps=steps, every_n=5)
    log = tmp_path / "requeue.out"
    # the first start holds after its first checkpoint (step 5) until the requeue stops it (tests/launch/hold.py)
    hold = ["--trainer.callbacks+=tests.launch.hold.HoldFirstStart", "--trainer.callbacks.after_step=5"]
    job = submit_train(["-c", str(config), "--trainer.callbacks+=dawn_train.launch.callbacks.ScaleReport", *hold],
                       log, tasks=1, name="dawn-test-requeue")
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (run / "checkpoints" / "last.ckpt").is_file():
        state = slurm.job_states(job).get(job)
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"{state} before the first checkpoint:\n{log.read_text()}"
        assert time.monotonic() < deadline, "no checkpoint before the deadline"
        time.sleep(0.5)
    run_id = (run / "wandb_run_id").read_text()
    slurm.requeue(job, start_now=True)  # skip the ~2 min BeginTime hold of a requeued job
    wait_done(job, log)
    record = slurm.job_records(job)[0]
    assert int(record["Restarts"]) >= 1
    text = log.read_text()
    assert text.count("[train.sbatch] job") >= 3 and "resuming from" in text  # two starts, one exit line
    assert text.count("[hold] first start held after step 5") == 1
    (r0,) = ranks(run, 1)
    assert r0["global_step"] == steps
    assert 0 < r0["train_batches"] < steps, "the second start trained only the remaining steps"
    assert (run / "wandb_run_id").read_text() == run_id
    assert len(offline_runs(run)) >= 2 and all(p.name.endswith(run_id.strip()) for p in offline_runs(run))
