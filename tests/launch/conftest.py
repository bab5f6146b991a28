"""Helpers for the launch tests: a tiny LFG config pointing at the session's synthetic shards,
and `dawn-train` in a subprocess with a deadline (Lightning DDP must not re-launch pytest)."""
from __future__ import annotations

import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_LFG = [REPO / "experiments" / name for name in ("base.yaml", "demo/base.yaml", "demo/lfg.yaml")]


def compose(paths: list[Path]) -> dict:
    """The YAML files merged as `-c a -c b ...` merges them (mappings key by key, a later list or value
    replaces); `${...}` interpolations are kept, so the file can still be moved by `run.root`/`run.name`."""
    def merge(old, new):
        if isinstance(old, dict) and isinstance(new, dict):
            return {**old, **{k: merge(old.get(k), v) for k, v in new.items()}}
        return new

    config: dict = {}
    for path in paths:
        config = merge(config, yaml.safe_load(Path(path).read_text()))
    return config


def tiny_lfg_config(path: Path, shards: Path, run_dir: Path, max_steps: int = 6, every_n: int = 3,
                    validate: bool = False) -> Path:
    """The demo LFG (experiments/base.yaml + demo/base.yaml + demo/lfg.yaml) as one file, its run at
    `run_dir`, data from `shards`, a few steps."""
    config = compose(DEMO_LFG)
    config["run"].update(root=str(run_dir.parent), name=run_dir.name)
    config["data"]["init_args"].update(shards=str(shards), batch_size=4)  # small batches: tests count them
    config["trainer"].update(max_steps=max_steps, log_every_n_steps=1, val_check_interval=max_steps,
                             limit_val_batches=1 if validate else 0)
    config["checkpoint"]["every_n_train_steps"] = every_n
    config["model"]["init_args"]["image_every_n_steps"] = 10_000
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dawn_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               DAWN_TRAIN=shlex.join([sys.executable, "-m", "dawn_train.cli"]), PYTHON=shlex.quote(sys.executable))
    return env


def run_dawn(args: list[str], timeout: float, cwd: Path = REPO, retry_restoring: Path | None = None
             ) -> subprocess.CompletedProcess:
    """`dawn-train ARGS` in a subprocess; fails the test with the output tail on error or timeout.  On a timeout
    each process of the run (Lightning re-launches the command once per extra rank) gets SIGUSR2 in turn, on which
    `faulthandler` prints all its threads' Python stacks to stderr: a hang in CI says where it waits.
    `retry_restoring=RUN_DIR`: for the multi-process gloo runs, one of which once hung in CI with no trace (a resumed
    ZeRO-3 run); RUN_DIR is copied first, and a timeout puts it back as it was and runs the command once more,
    reporting the hung run's stacks as a warning, which pytest prints in its summary even when the retry passes."""
    snapshot = None
    if retry_restoring is not None:
        snapshot = Path(tempfile.mkdtemp()) / "run"
        shutil.copytree(retry_restoring, snapshot, symlinks=True)
    try:
        code, out, err = _run_with_deadline(args, timeout, cwd)
        if code is None and snapshot is not None:
            warnings.warn(f"dawn-train {' '.join(args)} did not finish within {timeout} s and was run again from the "
                          f"run folder as it was before; the stacks of its processes at the deadline:\n{err[-12000:]}")
            shutil.rmtree(retry_restoring)
            shutil.copytree(snapshot, retry_restoring, symlinks=True)
            code, out, err = _run_with_deadline(args, timeout, cwd)
    finally:
        if snapshot is not None:
            shutil.rmtree(snapshot.parent, ignore_errors=True)
    if code is None:
        pytest.fail(f"dawn-train {' '.join(args)} did not finish within {timeout} s:\n{out[-3000:]}\n"
                    f"--- stderr (with the Python stacks of every process at the deadline) ---\n{err[-12000:]}")
    if code != 0:
        pytest.fail(f"dawn-train {' '.join(args)} failed ({code}):\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess([sys.executable, "-m", "dawn_train.cli", *args], code, out, err)


def _run_with_deadline(args: list[str], timeout: float, cwd: Path) -> tuple[int | None, str, str]:
    """(exit code or None on timeout, stdout, stderr).  The run is its own process group, killed whole on a timeout
    or when the test itself is interrupted."""
    env = {**dawn_env(), "DAWN_TRAIN_STACKS_ON": "SIGUSR2"}
    with subprocess.Popen([sys.executable, "-m", "dawn_train.cli", *args], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            return proc.returncode, out, err
        except subprocess.TimeoutExpired:
            for pid in _group_members(proc.pid):  # one at a time: dumps written at once interleave in the pipe
                _signal(lambda: os.kill(pid, signal.SIGUSR2))
                try:
                    proc.communicate(timeout=1.0)  # keeps draining the pipes while it dumps
                except subprocess.TimeoutExpired:
                    pass
            _signal(lambda: os.killpg(proc.pid, signal.SIGKILL))
            out, err = proc.communicate(timeout=60)
            return None, out, err
        except BaseException:
            _signal(lambda: os.killpg(proc.pid, signal.SIGKILL))
            raise


def _group_members(pgid: int) -> list[int]:
    """PIDs of the process group `pgid` (Linux /proc), the leader first."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
            members.append(int(stat.parent.name))
    return sorted(members, key=lambda pid: pid != pgid)


def _signal(send) -> None:
    try:
        send()
    except ProcessLookupError:
        pass


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))
