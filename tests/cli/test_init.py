"""`dawn-train --help`'s summary and README.md's command reference name every command and subcommand the parser
has."""
from __future__ import annotations

import argparse
import re

import dawn_train.cli
from dawn_train.cli import LIGHTNING_COMMANDS, build_parser
from tests.conftest import REPO


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [prefix + name, *commands(sub, f"{prefix}{name} ")]
    return found


def test_the_help_summary_names_every_command():
    summary = dawn_train.cli.__doc__
    named = set()
    for line in summary.splitlines():
        match = re.match(r"\s+dawn-train (.+?)(\s{2,}|$)", line)
        if match:
            words = match.group(1).split()
            groups = [w for w in words if re.fullmatch(r"[a-z|-]+", w) and w != "|"]
            parent = ""
            for word in groups:
                if word in ("data", "bench"):
                    parent = word + " "
                    continue
                named |= {parent + name for name in word.split("|")}
    listed = set(commands(build_parser())) - {"data", "bench"} | set(LIGHTNING_COMMANDS)
    assert listed <= named, f"not in dawn_train/cli/__init__.py's summary: {sorted(listed - named)}"


def test_the_readme_command_reference_names_every_command():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Command reference"):readme.index("### Errors, exit codes")]
    named = set()
    for cell in re.findall(r"^\| `dawn-train ([^`]+)`", table, flags=re.M):
        words = cell.replace("\\|", "|").split()
        parent = words[0] + " " if words[0] in ("data", "bench") else ""
        names = words[1] if parent else words[0]
        named |= {parent + name for name in names.split("|")}
    listed = set(commands(build_parser())) - {"data", "bench"} | set(LIGHTNING_COMMANDS)
    assert listed <= named, f"not in README.md's command reference: {sorted(listed - named)}"
