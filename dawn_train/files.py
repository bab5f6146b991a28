"""Reading the JSON files users hand to commands (shard manifests, eval results, sweep and run records): a missing,
misplaced or damaged file is one error naming the file and what it should have been, never a JSON parser's
message without a file name or a UnicodeDecodeError traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, what: str) -> Any:
    """The parsed JSON at `path`; `what` names the file's role in errors ("shard manifest", "eval result")."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder ({what} file expected)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file ({what} expected)") from None
    try:
        return json.loads(raw)  # bytes: UTF-8 (with or without a BOM), UTF-16 or UTF-32, as JSON allows
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not JSON text, a binary file ({what} expected)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}, {exc.msg} ({what} "
                         f"expected)") from None
