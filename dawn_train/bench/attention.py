"""`dawn-train bench attention`: banded temporal attention (ours) vs the official masked full attention.

Both compute, for every spatial position, attention over T frames with RoPE-free q/k/v, the T5 relative
bias and the band |i - j| <= window/2 (paper convention: window 80 = official `win_width` 40).  The
reference materialises the (T, T) score matrix and adds a -inf mask outside the band, as the official
`..._ca_multi_test.py` UNet does; ours (`models/a2v/local_attention.windowed_attention`) attends in blocks
over an unfolded window, so its memory grows as O(T * window) instead of O(T^2).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` above what was allocated before the call; on CPU
the process's peak resident set size above its current size (Linux `VmHWM`, reset through
`/proc/self/clear_refs` after glibc `malloc_trim` before each measurement; where that is not possible,
`ru_maxrss`, which only grows, so later measurements may read 0).  Times are the median of `repeats` runs after
one warm-up.
"""
from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import time
from typing import Callable

import torch

from dawn_train.models.a2v.attention import RelativePositionBias
from dawn_train.models.a2v.local_attention import (
    band_mask,
    dense_attention,
    half_width,
    relative_positions,
    windowed_attention,
)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc `malloc_trim`), so the next peak-RSS reading starts
    from memory actually in use rather than from pages the allocator kept from an earlier run."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> dict:
    """Run `fn` `warmup` times, then `repeats` times; returns median seconds and peak extra memory (bytes)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    gc.collect()
    times, peaks = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            _release_free_heap()
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")  # reset VmHWM to the current RSS
                base = _status_kb("VmRSS") * 1024
                method = "VmHWM"
            except (OSError, TypeError):
                base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
        del out
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
        elif method == "VmHWM":
            peaks.append(_status_kb("VmHWM") * 1024 - base)
        else:
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return {"seconds": statistics.median(times), "peak_bytes": max(peaks)}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def side_by_side(ours: dict, full: dict) -> dict:
    """Flat result: ms and MiB of both, and full / ours ratios."""
    mib = 2 ** 20
    return {
        "ours_ms": round(ours["seconds"] * 1e3, 2), "full_ms": round(full["seconds"] * 1e3, 2),
        "time_ratio_full_over_ours": round(full["seconds"] / max(ours["seconds"], 1e-12), 2),
        "ours_peak_mib": round(ours["peak_bytes"] / mib, 1), "full_peak_mib": round(full["peak_bytes"] / mib, 1),
        "mem_ratio_full_over_ours": round(full["peak_bytes"] / max(ours["peak_bytes"], 1), 2),
    }


@torch.no_grad()
def bench_attention(frames: int = 200, window: int | None = 80, convention: str = "total", positions: int | None = None,
                    heads: int = 8, dim_head: int = 32, block_size: int | None = None, backend: str = "math",
                    dtype: str = "float32", device: str = "auto", repeats: int = 3, seed: int = 0) -> dict:
    """Time and peak memory of one temporal attention over (positions, heads, frames, dim_head) tensors.

    `positions` = batch x h x w sequences (128-px first UNet level: 32 x 32 = 1024; default 1024 on CUDA,
    64 on CPU).  Also reports the largest difference between the two outputs."""
    dev = resolve_device(device)
    positions = positions or (1024 if dev.type == "cuda" else 64)
    half = half_width(window, convention)  # validates
    dt = getattr(torch, dtype)
    generator = torch.Generator(device=dev).manual_seed(seed)
    q, k, v = (torch.randn(positions, heads, frames, dim_head, generator=generator, device=dev, dtype=dt)
               for _ in range(3))
    q = q * dim_head ** -0.5
    bias = RelativePositionBias(heads=heads, num_buckets=32, max_distance=32).to(dev)

    def ours():
        return windowed_attention(q, k, v, half=half, bias_fn=lambda rel: bias(rel).to(dt), block_size=block_size,
                                  backend=backend)

    def full():
        rel = relative_positions(frames, frames, device=dev)
        return dense_attention(q, k, v, bias(rel).to(dt), mask=band_mask(frames, half, device=dev), backend=backend)

    max_diff = (ours().float() - full().float()).abs().max().item()
    result = {"device": str(dev), "frames": frames, "window": window, "half_width": half, "positions": positions,
              "heads": heads, "dim_head": dim_head, "dtype": dtype, "backend": backend}
    result.update(side_by_side(measure(ours, dev, repeats), measure(full, dev, repeats)))
    result["max_abs_diff"] = max_diff
    return result
