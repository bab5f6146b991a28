"""Output paths of `generate` and `eval`, checked before any work: a wrong one fails in one line at once, not
with a traceback after the whole generation or evaluation ran."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


class OutputPathError(ValueError):
    """The output path cannot be written; the message says why and what to give instead."""


def check_output_file(out: str | Path, example: str, suffix: Optional[str] = None, what: str = "") -> Path:
    """`out` as a Path, if it can be written as a file: not a directory, named with `suffix` (when given; `what`
    says what the file is), in a folder that exists or can be made and that this process may write into.
    `example`: a file name suggested when `out` is a directory."""
    out = Path(out)
    if out.is_dir():
        raise OutputPathError(f"{out}: is a directory; give the output file, e.g. {out / example}")
    if suffix and out.suffix.lower() != suffix:
        raise OutputPathError(f"{out}: {what}; name it with {suffix}")
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputPathError(f"{out}: the file exists and is not writable; give another --out")
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists: the rest is made
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"{out}: {folder} is a file, not a folder; give an --out in a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{out}: cannot write into {folder} (permission denied); give another --out")
    return out
