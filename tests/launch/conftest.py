"""Helpers for the launch tests: a tiny LFG config pointing at the session's synthetic shards,
and `dawn-train` in a subprocess with a deadline (Lightning DDP must not re-launch pytest)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_LFG = REPO / "experiments" / "demo" / "lfg.yaml"


def tiny_lfg_config(path: Path, shards: Path, run_dir: Path, max_steps: int = 6, every_n: int = 3,
                    validate: bool = False) -> Path:
    """experiments/demo/lfg.yaml with its run folder at `run_dir`, data from `shards`, a few steps."""
    text = DEMO_LFG.read_text().replace("runs/lfg-demo", str(run_dir)).replace("demo_out/shards", str(shards))
    config = yaml.safe_load(text)
    trainer = config["trainer"]
    trainer.update(max_steps=max_steps, log_every_n_steps=1, val_check_interval=max_steps,
                   limit_val_batches=1 if validate else 0)
    trainer["callbacks"][0]["init_args"]["every_n_train_steps"] = every_n
    config["model"]["init_args"]["image_every_n_steps"] = 10_000
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dawn_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               DAWN_TRAIN=f"{sys.executable} -m dawn_train.cli", PYTHON=sys.executable)
    return env


def run_dawn(args: list[str], timeout: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`dawn-train ARGS` in a subprocess; fails the test with the output tail on error or timeout."""
    try:
        proc = subprocess.run([sys.executable, "-m", "dawn_train.cli", *args], cwd=cwd, env=dawn_env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"dawn-train {' '.join(args)} did not finish within {timeout} s:\n{out[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"dawn-train {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))
