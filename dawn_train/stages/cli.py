"""`dawn-train fit|validate|test -c CONFIG ...`: LightningCLI over the stage modules and DataModules.

Configs in `experiments/` compose with several `-c` files, later ones winning: `experiments/base.yaml`
(trainer defaults, loggers, checkpointing, callbacks, precision), then a stage recipe, its resolution
or target, a curriculum overlay, a strategy preset.  Any value can be overridden on the command line.

Values may refer to others with OmegaConf interpolation (`${run.name}`; jsonargparse parser mode
`omegaconf+`).  It is resolved once, over the merged config and the command line, so one run name
places every directory of a run: `--run.name=foo` moves `trainer.default_root_dir`, the loggers'
`save_dir` and the checkpoint `dirpath` together.  A path in `${...}` is written from the top of the
config (`${trainer.default_root_dir}`), wherever the line sits.  `--print_config` shows the resolved
config and `--ckpt_path last` resumes from the run's `last.ckpt` (same global step, optimizer,
scheduler and data epoch).  A fresh fit refuses a folder that already holds a run, a fresh run that
fails before its first step removes what it wrote, and a finished fit logs where its run is
(stages/run_folder.py).  A config that does not parse is one line naming the key and the `-c` file
that sets it (stages/config_errors.py).

Values shared between the data and the model are written once:
- `link_arguments`: the A2V `curriculum_stage` sets the DataModule's reference frame rule (1: "first",
  2: "random"); --print_config leaves the link target out, the run applies it.
- set when the run starts (`derive_model_args`), as the saved config.yaml and the checkpoint record: the
  injected model's audio-feature size (A2V-FDM `cond_aud`, PBNet `audio_dim`) from the shards' manifest,
  and a PBNet's `pos_dim`/`eye_dim` from the stage's `target`.  These are not `link_arguments` because
  jsonargparse (4.53) leaves a link target nested in the stage's model out of the hyper-parameters that
  Lightning saves (the checkpoint could not rebuild its model) and cannot set one in a model that a
  function builds (`build_a2v`).  --print_config shows the values as configured.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Optional

import lightning as L
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from dawn_train.data.shards import load_manifest
from dawn_train.log import get_logger
from dawn_train.stages.a2v import CURRICULUM_REFERENCE
from dawn_train.stages.config_errors import ConfigError, explain
from dawn_train.stages.pbnet import TARGET_DIMS
from dawn_train.stages.progress import StepProgressBar
from dawn_train.stages.run_config import SaveConfigToWandb
from dawn_train.stages.run_folder import check_ckpt_path, check_fresh_start, run_summary

log = get_logger(__name__)

MODEL_ARGS = "model.init_args.model.init_args"  # the arguments of the model injected into the stage
AUDIO_DIM_ARGS = ("cond_aud", "audio_dim")     # A2V-FDM, PBNet


@dataclass
class Run:
    """Where a run lands and how W&B files it; `experiments/base.yaml` derives every directory from it.

    Args:
        name: the run: its folder is `<root>/<name>` (checkpoints/, csv/, wandb/, config.yaml) and its W&B name.
        root: the folder that holds the runs.
        experiment: the recipe the run belongs to, for configs that name a run after it (an A2V-FDM
            experiment has a run per curriculum stage, and stage 2 starts from stage 1's checkpoint).
        job_type: W&B job type (the stage).
        group: W&B group (the points of a sweep share one).
        tags: W&B tags.
        sweep_values: a sweep point's swept values by column (set by `dawn-train sweep`), logged flat into the W&B
            config so reports can group and filter by them.
    """

    name: Optional[str] = None
    root: str = "runs"
    experiment: Optional[str] = None
    job_type: Optional[str] = None
    group: Optional[str] = None
    tags: Optional[list[str]] = None
    sweep_values: Optional[dict] = None


def reference_rule(curriculum_stage: int) -> str:
    if curriculum_stage not in CURRICULUM_REFERENCE:
        raise ValueError(f"curriculum_stage must be one of {sorted(CURRICULUM_REFERENCE)}, got {curriculum_stage}")
    return CURRICULUM_REFERENCE[curriculum_stage]


def derive_model_args(config: Namespace) -> list[str]:
    """Set the injected model's audio-feature size from the shards' manifest and a PBNet's pose/eye dims
    from the stage's `target`, where the model has those arguments.  Returns the changes made, as
    "key: old -> new".  Without a readable manifest the audio size stays as configured (the DataModule
    reports the missing shards)."""
    model = config.get(MODEL_ARGS)
    if not isinstance(model, Namespace):
        return []
    wanted = dict(TARGET_DIMS.get(config.get("model.init_args.target"), {}))
    audio = [key for key in AUDIO_DIM_ARGS if key in model]
    shards = config.get("data.init_args.shards")
    if audio and shards:
        try:
            dim = int(load_manifest(shards)["feature"]["dim"])
        except FileNotFoundError:
            dim = None
        wanted.update({key: dim for key in audio if dim is not None})
    changes = []
    for key, value in wanted.items():
        if key in model and model[key] != value:
            changes.append(f"{MODEL_ARGS}.{key}: {model[key]} -> {value}")
            model[key] = value
    return changes


class DawnCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        # `${trainer.default_root_dir}` in a config means the key of that config, also under a subcommand
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs):
        kwargs.setdefault("parser_mode", "omegaconf+")
        kwargs.setdefault("exit_on_error", False)  # raise, so run_lightning_cli says it in one line (no usage dump)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--seed_offset", type=int, default=0,
                            help="added to seed_everything (a sweep's repeat seeds); config.yaml keeps both")
        parser.add_class_arguments(Run, "run")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.link_arguments("model.init_args.curriculum_stage", "data.init_args.reference", compute_fn=reference_rule)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        offset = config.get("seed_offset") or 0
        if offset:  # LightningCLI seeded with seed_everything alone; reseed before any class is built
            seed = config.get("seed_everything")
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"--seed_offset={offset} needs an integer seed_everything, got {seed!r}")
            L.seed_everything(seed + offset, workers=True)
        for change in derive_model_args(config):
            log.info("%s (from the shards' manifest and the stage's target)", change)
        # before any class is built: the W&B logger writes into the run folder as it is built
        check_ckpt_path(config)
        self.fresh_start = check_fresh_start(config) if self.subcommand == "fit" else None

    def _discard_failed_start(self) -> None:
        """A fresh fit that failed before its first step takes back its files (rank zero; the folder is shared)."""
        if self.fresh_start is not None and rank_zero_only.rank == 0:
            self.fresh_start.discard()

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except BaseException:
            self._discard_failed_start()
            raise

    def instantiate_trainer(self, **kwargs):
        trainer = self._get(self.config_init, "trainer", default={})
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, StepProgressBar()])
        return super().instantiate_trainer(**kwargs)

    def fit(self, model, **kwargs) -> None:
        """`trainer.fit`, then where the run is; a fresh run that fails before its first step leaves nothing."""
        try:
            self.trainer.fit(model, **kwargs)
        except BaseException:
            if self.trainer.global_step == 0:
                self._discard_failed_start()
            raise
        if self.trainer.is_global_zero:
            for line in run_summary(self.trainer):
                log.info("%s", line)


def run_lightning_cli(argv: list[str]) -> DawnCLI:
    """Run `fit|validate|test|predict` with `argv`, e.g.
    ["fit", "-c", "experiments/base.yaml", "-c", "experiments/demo/base.yaml", "-c", "experiments/demo/lfg.yaml"]."""
    try:
        return DawnCLI(
            L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=SaveConfigToWandb, save_config_kwargs={"overwrite": True}, args=None if argv == sys.argv[1:] else argv,
            auto_configure_optimizers=False,
        )
    except argparse.ArgumentError as exc:  # jsonargparse's parse error: the key, the problem and the -c file
        raise ConfigError(explain(str(exc), argv)) from None
