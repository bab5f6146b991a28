"""argparse types shared by commands: a bad value is refused by argparse with its flag, not deep inside."""
from __future__ import annotations

import argparse

# the bounded number types live beside generate's options (inference/options.py), whose flags and YAML use them
from dawn_train.inference.options import non_negative_float, non_negative_int, positive_float, positive_int

__all__ = ["non_negative_float", "non_negative_int", "positive_float", "positive_int", "seed_arg"]


def seed_arg(text: str) -> int:
    """A random seed: a whole number >= 0 (numpy's generators refuse negative seeds)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {seed}")
    return seed
