"""One folder, one run: a fresh `fit` never writes into a folder that holds another run, and a start
that fails before its first optimizer step leaves nothing behind.

A folder holds a run when it holds a checkpoint (`*.ckpt`: a file or a DeepSpeed directory, SLURM's
`hpc_ckpt_*.ckpt` included) or CSV logs (`metrics.csv`); the W&B logger's `wandb_run_id` alone is not
one (the logger writes it when it is built).  Continuing a run is a resume (`--ckpt_path last` or a
path); a new run takes a new `--run.name`.  The folders of a run are `trainer.default_root_dir` and
the run's `checkpoint.dirpath` (experiments/base.yaml puts the latter inside the former).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger

from dawn_train.tracking.local_runs import describe_wandb_run

RUN_FILES = ("*.ckpt", "metrics.csv")


class RunFolderError(FileExistsError):
    """A fresh fit into a folder that already holds a run."""


def run_files(folder: str | Path) -> list[Path]:
    """The checkpoints and CSV logs under `folder` (empty when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted({path for pattern in RUN_FILES for path in folder.rglob(pattern)})


def run_folders(config: Namespace) -> list[Path]:
    """The folders a fit config writes its run to; the working directory never counts (a config without a
    run folder lets Lightning version its own `lightning_logs/`)."""
    candidates = [config.get("trainer.default_root_dir"), config.get("checkpoint.dirpath")]
    folders: list[Path] = []
    for candidate in candidates:
        if not candidate or Path(candidate).resolve() == Path.cwd():
            continue
        path = Path(candidate)
        if not any(path == f or f in path.parents for f in folders):
            folders.append(path)
    return folders


class FreshStart:
    """The entries of a fresh run's folders before it started, so a failed start can take back what it wrote."""

    def __init__(self, folders: list[Path]):
        self.before = {folder: set(folder.iterdir()) if folder.is_dir() else None for folder in folders}

    def discard(self) -> None:
        """Remove what this start wrote: the folders it created, else the entries it added to them."""
        for folder, entries in self.before.items():
            if entries is None:
                shutil.rmtree(folder, ignore_errors=True)
            elif folder.is_dir():
                for entry in set(folder.iterdir()) - entries:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def check_fresh_start(config: Namespace) -> Optional[FreshStart]:
    """Refuse a fresh fit (no `ckpt_path`) into a folder that holds a run; None for a resume, which keeps
    everything of its folder whatever happens."""
    folders = run_folders(config)
    if config.get("ckpt_path"):
        return None
    for folder in folders:
        found = run_files(folder)
        if found:
            shown = ", ".join(str(p.relative_to(folder)) for p in found[:3]) + (" ..." if len(found) > 3 else "")
            raise RunFolderError(f"{folder} already holds a run ({shown}): resume it with --ckpt_path last, start a "
                                 f"new run with --run.name=<new name>, or remove the folder")
    return FreshStart(folders)


# `ckpt_path` values Lightning resolves itself rather than reading a path
CKPT_PATH_WORDS = ("last", "best", "hpc")


def check_ckpt_path(config: Namespace) -> None:
    """A `ckpt_path` that names a file or folder must be there: refused before anything is built or written
    (Lightning finds out after the loggers have started the run)."""
    value = config.get("ckpt_path")
    text = str(value or "")
    if not text or text in CKPT_PATH_WORDS or text.lower().startswith("registry") or "://" in text:
        return  # Lightning's own words, the model registry and remote files (fsspec, torch.hub) it resolves itself
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint (a .ckpt file or a DeepSpeed checkpoint "
                                f"folder); --ckpt_path last resumes the run folder's newest")


def run_summary(trainer) -> list[str]:
    """Where a finished fit left its run: the folder, the last checkpoint and the W&B run (with its sync command)."""
    lines = [f"run folder: {trainer.default_root_dir}"]
    callback = trainer.checkpoint_callback
    last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    lines.append(f"last checkpoint: {last}" if last else
                 "no checkpoint was written (checkpoint.every_n_train_steps is more than the steps trained)")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            lines.append(describe_wandb_run(logger.save_dir, logger.version))
    return lines
