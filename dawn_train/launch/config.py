"""Resolve a `dawn-train fit` command line to its full config without running anything.

Uses the training CLI itself (`--print_config`), so the validation is exactly the one `fit` applies:
an unknown key or a value of the wrong type fails here, with jsonargparse's message naming the key.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import yaml

from dawn_train.stages.config_errors import ConfigError


def resolve_fit_config(argv: list[str]) -> dict:
    """`dawn-train fit ARGV --print_config` in this process -> the resolved config dict; a ConfigError names
    the key that does not parse and the file that sets it."""
    from dawn_train.stages.cli import run_lightning_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_lightning_cli(["fit", *argv, "--print_config"])
        except SystemExit as exc:  # --print_config ends the parse with exit 0
            if exc.code not in (0, None):
                raise ConfigError(f"fit {' '.join(argv)}: exit code {exc.code}: {err.getvalue().strip()}") from None
    text = out.getvalue()
    # imports may print log lines (DeepSpeed's accelerator notice) before the YAML document
    start = text.find("# lightning.pytorch==")
    return yaml.safe_load(text[start:] if start >= 0 else text)


def checkpoint_dirs(config: dict) -> list[Path]:
    """Where a resolved fit config keeps checkpoints: the run dir (SLURM's hpc_ckpt_*.ckpt), the run's
    `checkpoint` (the ModelCheckpoint of dawn_train.stages.cli) and any other ModelCheckpoint's `dirpath`."""
    trainer = config.get("trainer") or {}
    dirs = [Path(trainer.get("default_root_dir") or ".")]
    if (config.get("checkpoint") or {}).get("dirpath"):
        dirs.append(Path(config["checkpoint"]["dirpath"]))
    for callback in trainer.get("callbacks") or []:
        if isinstance(callback, dict) and callback.get("class_path", "").endswith("ModelCheckpoint"):
            dirpath = (callback.get("init_args") or {}).get("dirpath")
            if dirpath:
                dirs.append(Path(dirpath))
    return dirs
