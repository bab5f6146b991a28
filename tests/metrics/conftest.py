"""Helpers for metric tests: random weight files made from the architecture itself."""
from pathlib import Path

import torch
from torch import nn


def save_random_weights(net: nn.Module, path: Path, *, drop_counters: bool = False) -> Path:
    """Write `net`'s state dict with random values (the shapes are the architecture's)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, value in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            if drop_counters:
                continue
            state[name] = value
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            state[name] = torch.randn(value.shape, generator=gen) * 0.05
    torch.save(state, path)
    return path


def check_reference_layout(net: nn.Module, count: int, keys: dict[str, tuple[int, ...]]) -> None:
    """Compare with names/shapes written down from the reference source (not from our module)."""
    state = net.state_dict()
    assert len(state) == count, f"{len(state)} tensors, reference has {count}"
    for name, shape in keys.items():
        assert name in state, name
        assert tuple(state[name].shape) == shape, (name, tuple(state[name].shape), shape)
