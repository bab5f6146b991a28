"""`dawn-train fit|validate|test -c CONFIG`: LightningCLI over the stage modules and DataModules.

Configs in `experiments/` name the stage module and its injected model (`class_path` /
`init_args`) and the DataModule; several `-c` files compose in order (base, resolution,
ablation), `--print_config` shows the resolved YAML, and `--ckpt_path last` resumes from the
run's `last.ckpt` (same global step, optimizer, scheduler and data epoch)."""
from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI


class DawnCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--seed_offset", type=int, default=0, help="added to seed_everything (sweep points)")


def run_lightning_cli(argv: list[str]) -> DawnCLI:
    """Run `fit|validate|test|predict` with `argv` (e.g. ["fit", "-c", "experiments/demo/lfg.yaml"])."""
    return DawnCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        save_config_kwargs={"overwrite": True}, args=None if argv == sys.argv[1:] else argv,
        parser_kwargs={"parser_mode": "omegaconf"} if _has_omegaconf() else {}, auto_configure_optimizers=False,
    )


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True
