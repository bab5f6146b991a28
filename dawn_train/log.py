"""One logging set-up for the library: `get_logger(__name__)` everywhere, no `print`.

Library messages go through the standard `logging` module under the `dawn_train` logger, so a user
(or a test) decides where they go.  `setup_logging()` (called by the CLI) prints them on stderr as
`[dawn_train.inference.generate] message`.  Stages speak on rank zero only (`trainer.is_global_zero`)."""
from __future__ import annotations

import logging
import sys

ROOT = "dawn_train"


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
