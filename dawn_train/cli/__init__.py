"""`dawn-train`: the one command line of dawn_train.

    dawn-train data synth|prep|shards|inspect|probe ...   build and check datasets; the synthetic probe
    dawn-train fit|validate|test|predict -c CONFIG   train a stage (LightningCLI; configs in experiments/)
    dawn-train sweep FILE [--submit]                a grid of runs as a SLURM job array
    dawn-train generate --image --audio --out       portrait + speech -> talking-head mp4
    dawn-train eval | eval-lfg ...                  test-set metrics (paper Table 1 layout) | LFG reconstructions
    dawn-train report | quality-report ...          compare runs | the synthetic quality results file
    dawn-train convert-official | export ...        official checkpoint -> ours | training checkpoint -> weights
    dawn-train bench loader|prep|attention|sample|generate|step|cases|roofline ...   benchmarks

Each subcommand parses its arguments and calls one function of the package."""
# The package: one module per command group, each adding its subparsers and holding their command functions
# (their imports of the rest of dawn_train stay inside the functions: `dawn-train --help` starts fast).
#     data.py        data synth|shards|prep|inspect|probe
#     bench.py       bench loader|prep|attention|sample|generate|step|cases|roofline
#     generate.py    generate
#     evaluate.py    eval, eval-lfg, report, quality-report
#     train.py       fit|validate|test|predict (LightningCLI), sweep
#     checkpoints.py convert-official, export
#     output.py      JSON or table output shared by commands
from __future__ import annotations

import argparse
import os
import sys

from dawn_train.cli.bench import add_bench_commands
from dawn_train.cli.checkpoints import add_convert_command, add_export_command
from dawn_train.cli.data import add_data_commands
from dawn_train.cli.evaluate import add_evaluate_commands
from dawn_train.cli.generate import add_generate_command
from dawn_train.cli.train import LIGHTNING_COMMANDS, add_sweep_command

__all__ = ["LIGHTNING_COMMANDS", "build_parser", "main", "run_command"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dawn-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback (also: DAWN_DEBUG=1; "
                        "anywhere on the command line); errors otherwise print one line: exit 1, usage errors exit 2")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(commands)
    add_bench_commands(commands)
    add_generate_command(commands)
    add_convert_command(commands)
    add_evaluate_commands(commands)
    add_sweep_command(commands)
    add_export_command(commands)
    return parser


def run_command(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from dawn_train.stages.cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    return args.func(args)


def register_stack_dump() -> None:
    """DAWN_TRAIN_STACKS_ON=SIGUSR2 (or SIGQUIT): on that signal every thread of the process prints its Python stack
    to stderr and the process goes on (`kill -USR2 PID` on a run that seems stuck, every rank its own PID).  Only
    signals that mean nothing else to a run: not SIGUSR1 (the SLURM templates' requeue), SIGINT or SIGTERM (stopping)."""
    import faulthandler
    import signal

    name = os.environ.get("DAWN_TRAIN_STACKS_ON", "").strip()
    if not name:
        return
    allowed = {"SIGUSR2": signal.SIGUSR2, "SIGQUIT": signal.SIGQUIT}
    sig = allowed.get(name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper())
    if sig is None:
        raise SystemExit(f"dawn-train: error: DAWN_TRAIN_STACKS_ON={name!r}: use SIGUSR2 or SIGQUIT (SIGUSR1 is the "
                         f"SLURM requeue signal, SIGINT/SIGTERM stop a run)")
    faulthandler.register(sig, all_threads=True, chain=False)


def console_main() -> int:
    """The `dawn-train` command: :func:`main` in a process whose malloc keeps freed memory (launch/allocator.py),
    set before the first large tensor.  Not in :func:`main`, which tests call in their own process."""
    from dawn_train.launch.allocator import keep_freed_memory

    keep_freed_memory()
    return main()


def main(argv: list[str] | None = None) -> int:
    """Run one command.  A known failure prints one line and returns 1, a config usage error 2 (argparse exits 2
    itself); `--debug` or DAWN_DEBUG=1 adds the traceback.  See dawn_train/launch/failures.py."""
    import traceback

    from dawn_train.launch.failures import classify, debug_requested
    from dawn_train.log import setup_logging

    setup_logging()
    register_stack_dump()
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    try:
        return run_command(argv)
    except Exception as exc:
        failure = classify(exc)
        if failure is None:  # a bug: Python's traceback
            raise
        if debug:
            traceback.print_exc()
        code, message = failure
        print(f"dawn-train: error: {message}", file=sys.stderr)
        return code

