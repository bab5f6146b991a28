"""One logging set-up for the library: `get_logger(__name__)` everywhere, no `print`.

Library messages go through the standard `logging` module under the `dawn_train` logger, so a user
(or a test) decides where they go.  `setup_logging()` (called by the CLI) prints them on stderr as
`[dawn_train.inference.generate] message`; `rank_zero_info` / `rank_zero_warn` speak once per
multi-process job (rank from the usual launcher variables, as Lightning does)."""
from __future__ import annotations

import logging
import os
import sys

ROOT = "dawn_train"
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def get_logger(name: str) -> logging.Logger:
    """The logger of a module (`__name__`), under the package's root logger."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the message (so redirections apply)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler assigns it once; the property decides
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Messages of level >= `level` on stderr as `[dawn_train.module] message`; idempotent."""
    root = logging.getLogger(ROOT)
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        root.addHandler(handler)


def global_rank() -> int:
    for variable in _RANK_VARIABLES:
        value = os.environ.get(variable)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def rank_zero_info(logger: logging.Logger, message: str, *args) -> None:
    if global_rank() == 0:
        logger.info(message, *args)


def rank_zero_warn(logger: logging.Logger, message: str, *args) -> None:
    if global_rank() == 0:
        logger.warning(message, *args)
