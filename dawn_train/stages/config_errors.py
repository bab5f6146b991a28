"""A `fit` config that does not parse, said in one line: the key, what is wrong, and the `-c` file that sets it.

jsonargparse reports an unknown key or a value of the wrong type as a nested message (a Union of
subclasses, a class_path, the option), followed by the whole usage.  `explain` reads the key path
out of that message and searches the `-c` files of the command line (and the command line itself)
for it, so the user reads `model.init_args.lrr: unknown key of dawn_train.stages.lfg.LFGStage (set in
experiments/x.yaml)` instead of 50 lines of usage.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import yaml


class ConfigError(ValueError):
    """A fit/validate/test command line or config file that does not parse; a usage error (exit 2)."""


_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_GROUP_OPTION = re.compile(r"(?:Group|Subcommand) '([^']+)' does not accept option '([^']+)'")
_OPTION = re.compile(r"Option '([^']+)' is not accepted")
_EXPECTED = re.compile(r"Expected a <class '([^']+)'>\. Got value: (.*)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")


def config_files(argv: list[str]) -> list[Path]:
    """The files of `-c FILE`, `--config FILE` and `--config=FILE` in `argv`, in order."""
    files = []
    for i, word in enumerate(argv):
        if word in ("-c", "--config") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif word.startswith("--config="):
            files.append(Path(word.split("=", 1)[1]))
    return files


def _holds(node, path: list[str]) -> bool:
    for part in path:
        if not isinstance(node, dict):
            return False
        # `callbacks+:` appends to a list; the key is still `callbacks`
        match = next((k for k in (part, f"{part}+") if k in node), None)
        if match is None:
            return False
        node = node[match]
    return True


def where_set(key: str, argv: list[str]) -> Optional[str]:
    """Where the dotted `key` is set: "on the command line", else "in <the last -c file that sets it>"."""
    if any(w == f"--{key}" or w.startswith(f"--{key}=") for w in argv):
        return "on the command line"
    path = key.split(".")
    found = None
    for file in config_files(argv):
        try:
            data = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if _holds(data, path):
            found = f"in {file}"
    return found


def _broken_yaml(argv: list[str]) -> Optional[str]:
    """The first `-c` file that is not valid YAML, with the parser's line and column."""
    for file in config_files(argv):
        try:
            yaml.safe_load(file.read_text())
        except OSError:
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            return f"{file}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})"
    return None


def explain(message: str, argv: list[str]) -> str:
    """jsonargparse's error `message` for the command line `argv` -> one line naming the key and the file."""
    if message.startswith("Problems parsing config"):
        return _broken_yaml(argv) or " ".join(message.split())
    if missing := re.search(r"File does not exist: '([^']+)'", message):
        return f"-c {missing.group(1)}: no such config file"
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        return f"unknown option(s) on the command line: {unrecognized.group(1)} (`dawn-train fit --help` lists them)"
    path, owner, problem = [], None, None
    # the first alternative of a Union names the configured class; the others ("Expected a NoneType") do not
    for line in message.split("- Expected a <class 'NoneType'>")[0].splitlines():
        if match := _GROUP_OPTION.search(line):  # a subcommand's name is not part of the key
            path += ([] if line.lstrip().startswith("Subcommand") else [match.group(1)]) + match.group(2).split(".")
            problem = "unknown key"
        elif match := _OPTION.search(line):
            path.append(match.group(1))
            problem = f"unknown key of {owner}" if owner else "unknown key"
        elif match := _EXPECTED.search(line):
            problem = f"expected {match.group(1)}, got {match.group(2).strip()!r}"
        elif match := _CLASS_PATH.search(line):
            owner = match.group(1)
            path.append("init_args")
        elif match := _PARSER_KEY.search(line):
            path += match.group(1).split(".")
    if not path or problem is None:
        return " ".join(message.split())  # a message of another form: the whole of it, on one line
    key = ".".join(path)
    source = where_set(key, argv)
    where = f"set {source}" if source else "not found in the -c files or on the command line"
    return f"{key}: {problem} ({where}); `dawn-train fit --print_config` shows the accepted keys and values"
