"""Training commands: `fit|validate|test|predict` (LightningCLI, dispatched by `run_command` before argparse)
and `dawn-train sweep`, a grid of runs as a SLURM job array (or one after the other, here)."""
from __future__ import annotations

import argparse
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def cmd_sweep(args) -> int:
    from dawn_train.cli import build_parser
    from dawn_train.launch.sweep import run_sweep

    if args.submit and args.dry_run:
        raise ValueError("--submit and --dry-run exclude each other")
    summary = run_sweep(args.file, submit=args.submit, only_failed=args.only_failed, parser=build_parser(),
                        local=args.local)
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"sweep {summary['sweep']}: {summary['points']} points ({summary['trainings']} trainings, "
          f"{summary['evals']} evals), W&B group {summary['group']}, out {summary['out_dir']}; "
          f"to run: {summary['to_run'] or 'nothing'}")
    if summary["local"] is not None:
        for name, state in summary["local"].items():
            print(f"{state}: {name}")
        return 0 if all(state == "done" for state in summary["local"].values()) else 1
    if summary["job"]:
        print(f"submitted job array {summary['job']}"
              + (f", evals as array {summary['eval_job']} after it" if summary["eval_job"] else ""))
    elif summary["script"]:
        print(f"rendered {summary['script']} (not submitted; add --submit, or run: {summary['sbatch']})")
    return 0


def add_sweep_command(commands: argparse._SubParsersAction) -> None:
    """`sweep`, added to the top-level `commands`."""
    sweep = commands.add_parser("sweep", help="grid of config overrides -> SLURM job array (validate, render, submit)")
    sweep.add_argument("file", help="sweep file, e.g. experiments/ablations/window.yaml")
    sweep.add_argument("--submit", action="store_true", help="submit the rendered array with sbatch")
    sweep.add_argument("--dry-run", action="store_true", help="validate and render only (the default without --submit)")
    sweep.add_argument("--only-failed", action="store_true", help="only points that did not finish and are not queued")
    sweep.add_argument("--local", action="store_true", help="run the jobs here, one after the other (trainings "
                       "first), instead of submitting them")
    sweep.set_defaults(func=cmd_sweep)
