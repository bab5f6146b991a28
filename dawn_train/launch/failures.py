"""What a failed `dawn-train` command says, and its exit code.

- A known failure (bad input, a missing or wrong file, a setting that cannot work, a run folder that
  holds another run, too many bad samples, not enough memory, SLURM refusing a job): one line
  `dawn-train: error: ...` naming the file or setting and what to do; exit 1.
- A usage error (argparse, an unknown or wrongly typed config key): one line; exit 2.
- Anything else is a bug: Python's traceback; exit 1.
`--debug` anywhere on the command line, or `DAWN_DEBUG=1`, prints the traceback of a known failure too.

Known failures often arrive wrapped: jsonargparse wraps an error raised while building a class from the
config in its own ValueError, and a DataLoader worker's error comes back with the worker's traceback as
its message.  `classify` reports the error our code raised, with its own message.
"""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Iterator, Optional

from dawn_train.launch.slurm import SlurmError
from dawn_train.stages.config_errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1]
KNOWN = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
         NotImplementedError, TimeoutError, SlurmError)  # TooManyBadSamples, CheckpointError ... are ValueErrors
USAGE = (ConfigError,)
DEBUG_FLAG = "--debug"


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether tracebacks are wanted, argv without `--debug`)."""
    wanted = DEBUG_FLAG in argv or os.environ.get("DAWN_DEBUG", "").strip().lower() in ("1", "true", "yes")
    return wanted, [word for word in argv if word != DEBUG_FLAG]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (or while handling), innermost last."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _raised_by_us(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and PACKAGE in Path(frames[-1].filename).resolve().parents


def _message(exc: BaseException) -> str:
    message = str(exc)
    if message.startswith("Caught ") and "Original Traceback" in message:  # re-raised from a DataLoader worker
        cls = type(exc)
        name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        at = message.rfind(f"\n{name}: ")
        if at >= 0:
            message = message[at + len(name) + 3:]
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        message = str(exc.args[0])
    return " ".join(message.split()) or type(exc).__name__


def classify(exc: BaseException) -> Optional[tuple[int, str]]:
    """(exit code, one-line message) of a known failure or usage error; None for a bug."""
    if not isinstance(exc, KNOWN + USAGE):  # a bug, even when it was raised while handling a known error
        return None
    known = [e for e in _chain(exc) if isinstance(e, KNOWN + USAGE)]
    # the outermost error our own code raised says the most; else the innermost (the original) one
    failure = next((e for e in known if _raised_by_us(e)), known[-1])
    return (2 if isinstance(failure, USAGE) else 1), _message(failure)
