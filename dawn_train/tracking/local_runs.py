"""Where a W&B run lies on disk, and how to upload it: `<save_dir>/wandb/offline-run-<time>-<id>` (offline,
uploaded later with `wandb sync`), `run-<time>-<id>` (streamed), nothing when W&B is disabled."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional


def wandb_run_dir(save_dir: str | Path, run_id: Optional[str]) -> Optional[Path]:
    """The newest local folder of W&B run `run_id` under `save_dir` (a resumed run has one per start)."""
    if not run_id:
        return None
    found = sorted(Path(save_dir).glob(f"wandb/*run-*-{run_id}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def describe_wandb_run(save_dir: str | Path, run_id: Optional[str]) -> str:
    """One line: the W&B run, its local folder and, for an offline run, the command that uploads it."""
    folder = wandb_run_dir(save_dir, run_id)
    if folder is None:
        return f"W&B run {run_id}: no local files under {Path(save_dir) / 'wandb'} (W&B disabled?)"
    if folder.name.startswith("offline-run-"):
        return f"W&B run {run_id} (offline): {folder}; upload it with: wandb sync {shlex.quote(str(folder))}"
    return f"W&B run {run_id}: {folder} (streamed to the server)"
