"""What a failed `dawn-train` command says, and its exit code.

- A known failure (bad input, a missing or wrong file, a setting that cannot work, a run folder that
  holds another run, too many bad samples, not enough memory, SLURM refusing a job): one line
  `dawn-train: error: ...` naming the file or setting and what to do; exit 1.
- A usage error (argparse, an unknown or wrongly typed config key): one line; exit 2.
- Anything else is a bug: Python's traceback, with a one-line hint after it; exit 1.
`--debug` anywhere on the command line, or `DAWN_DEBUG=1`, prints the traceback of a known failure too.

What is known: an error of one of dawn_train's own types (any exception class defined in the package, whatever
its base: CheckpointError, ConfigError, SchemaError, TooManyBadSamples, InsufficientMemory, SlurmError,
SweepError, RunFolderError, AudioError, VideoError, ImageError, PrepFailure, PrepExtraMissing, MetricUnavailable,
OutputPathError, ...), or a ValueError / OSError such as FileNotFoundError (BUILTIN) that dawn_train code raised
itself: the innermost traceback frame outside the standard library is in the dawn_train package (a
`Path.read_text` of a missing file, called by our code, is ours; a shape check inside torch or numpy is not).
The same ValueError raised deep inside torch or numpy is a bug in how we call them, or an input no check catches
yet: it keeps its traceback.

Known failures often arrive wrapped: jsonargparse wraps an error raised while building a class from the
config in its own ValueError, and a DataLoader worker's error comes back with the worker's traceback as
its message.  `classify` reports the error our code raised, with its own message.
"""
from __future__ import annotations

import os
import re
import sysconfig
import traceback
from pathlib import Path
from typing import Iterator, Optional

from dawn_train.stages.config_errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
# builtin errors that are a known failure when dawn_train code raised them (not torch, numpy, ...)
BUILTIN = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
           NotImplementedError, TimeoutError)
USAGE = (ConfigError,)
DEBUG_FLAG = "--debug"
BUG_HINT = ("dawn-train: the error above is not one of dawn-train's checks (a bug, or an input no check catches "
            "yet): please report it with this traceback")


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


def ours(cls: type) -> bool:
    """An exception type defined in the dawn_train package (or derived from one)."""
    return any(c.__module__.split(".")[0] == PACKAGE.name for c in cls.__mro__ if c.__module__ != "builtins")


def _in_library(filename: str) -> bool:
    """A frame of the standard library (site-packages excluded): skipped to find who called it."""
    path = Path(filename).resolve()
    return STDLIB in path.parents and not any(p in ("site-packages", "dist-packages") for p in path.parts)


def _frames(exc: BaseException) -> list[str]:
    """The files of `exc`'s traceback, innermost last; for an error re-raised from a DataLoader worker, the
    worker's own traceback (in the message) instead."""
    message = str(exc)
    if message.startswith("Caught ") and "Original Traceback" in message:
        return re.findall(r'^\s*File "([^"]+)", line \d+', message, flags=re.MULTILINE)
    return [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]


def _raised_by_us(exc: BaseException) -> bool:
    """The innermost frame outside the standard library is in the dawn_train package."""
    frames = [f for f in _frames(exc) if not _in_library(f)]
    return bool(frames) and PACKAGE in Path(frames[-1]).resolve().parents


def _known(exc: BaseException) -> bool:
    return isinstance(exc, USAGE) or ours(type(exc)) or (isinstance(exc, BUILTIN) and _raised_by_us(exc))


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
    """(exit code, one-line message) of a known failure or usage error; None for a bug, whose traceback then
    ends with a one-line hint (`BUG_HINT`, added as a note)."""
    known = [e for e in _chain(exc) if _known(e)] if isinstance(exc, BUILTIN + USAGE) or ours(type(exc)) else []
    if not known:  # a bug, also when it was raised while handling a known error
        if BUG_HINT not in getattr(exc, "__notes__", []):
            exc.add_note(BUG_HINT)
        return None
    # the outermost error our own code raised says the most; else the innermost (the original) one
    failure = next((e for e in known if _raised_by_us(e)), known[-1])
    return (2 if isinstance(failure, USAGE) else 1), _message(failure)
