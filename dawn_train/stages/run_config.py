"""The resolved config of a LightningCLI run, saved as `<run>/config.yaml` (Lightning's SaveConfigCallback) and
given in full to W&B with what else makes the run reproducible.

W&B config of a training run (beside the stage's hyper-parameters, which Lightning logs at top level):
    config                  the whole resolved config: trainer, model, data, run, checkpoint, seeds
    git_commit, git_dirty   the code that ran
    data_manifest_sha256    the shards' manifest (sha256 of its canonical JSON: what the data was)
    seed                    the seed the run started from (seed_everything + seed_offset)
    <column>: value         a sweep point's swept values (`run.sweep_values`), flat, so W&B reports group,
                            filter and plot by them
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from dawn_train.data.shards import load_manifest
from dawn_train.tracking.wandb_runs import git_state


def manifest_sha256(shards: Optional[str]) -> Optional[str]:
    """sha256 of the shards' manifest as canonical JSON, or None without readable shards."""
    if not shards:
        return None
    try:
        manifest = load_manifest(shards)
    except (FileNotFoundError, ValueError):
        return None
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def run_config_record(config: dict) -> dict:
    """What a run gives W&B besides its stage's hyper-parameters (see the module docstring)."""
    data = (config.get("data") or {}).get("init_args") or {}
    seed = os.environ.get("PL_GLOBAL_SEED")
    record = {"config": config, **git_state(), "data_manifest_sha256": manifest_sha256(data.get("shards")),
              "seed": int(seed) if seed is not None else config.get("seed_everything")}
    record.update(((config.get("run") or {}).get("sweep_values")) or {})
    return record


class SaveConfigToWandb(SaveConfigCallback):
    """Writes config.yaml as Lightning does, then puts the full resolved config, git commit and data-manifest
    hash into the config of every W&B logger of the run (rank zero only)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        record = run_config_record(config)
        for logger in loggers:
            logger.experiment.config.update(record, allow_val_change=True)
