"""argparse types shared by commands: a bad value is refused by argparse with its flag, not deep inside."""
from __future__ import annotations

import argparse


def seed_arg(text: str) -> int:
    """A random seed: a whole number >= 0 (numpy's generators refuse negative seeds)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {seed}")
    return seed
