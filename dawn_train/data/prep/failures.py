"""Why a raw video could not be prepared: `PrepFailure`, and `failures.jsonl`, one line per failed video.

Several prep processes (slices of a SLURM array, workers) may fail videos of one output directory at the
same time: each line is appended with one `write` on a file opened with O_APPEND, which POSIX keeps whole
on a local file system.  A rerun reads the file and skips the videos listed (they would fail the same way);
to try them again, delete their lines (or the file).

Only faults of one video are listed (`PrepFailure`).  A problem of the machine or of the code (mediapipe
missing, disk full, out of memory, a bug) would fail every later video the same way and must not mark them
as bad: it stops the run (`PrepStopped`), and a rerun continues where it stopped."""
from __future__ import annotations

import json
import os
from pathlib import Path

FAILURES = "failures.jsonl"


class PrepFailure(ValueError):
    """A video that cannot be prepared (no face, face lost, too short, corrupt, no audio ...): the message
    is the reason recorded in failures.jsonl."""


class PrepStopped(ValueError):
    """The run stopped for a reason that is not a fault of one video (module docstring): nothing was listed in
    failures.jsonl for it; the message says what happened (one line, as the CLI prints it)."""


def record_failure(out: Path, video_id: str, source: str, reason: str) -> dict:
    """Append one line {id, path, reason} to `out/failures.jsonl`; returns it."""
    line = {"id": video_id, "path": source, "reason": reason}
    fd = os.open(out / FAILURES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
    return line


def read_failures(out: Path) -> dict[str, dict]:
    """The videos listed in `out/failures.jsonl`: id -> its line (a torn last line is ignored)."""
    path = out / FAILURES
    failed = {}
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and "id" in line:
            failed[line["id"]] = line
    return failed
