"""`bench cases --profile N`: where one timed call's time goes, by operator, from torch.profiler.

One more call of the case, after it was timed, runs under the profiler.  On a CPU an operator's time is its self
CPU time; on CUDA its self device time (the kernels it launched), and the run also reports how many kernels the
call launched and for how long the device was busy against the call's wall time: a step of thousands of short
kernels is launch-bound however fast each kernel is.  Attention operators show which kernel the device picked
(`aten::_scaled_dot_product_efficient_attention`, `..._flash_attention`, `..._cudnn_attention` or the math
decomposition's `aten::bmm`), which a trace on another device cannot say.  `trace` writes the call's timeline as a
Chrome trace (open it in https://ui.perfetto.dev or chrome://tracing).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import torch


def profile_call(fn: Callable[[], object], device: torch.device, top: int = 15,
                 trace: Optional[Path] = None) -> dict:
    """Profile one call of `fn` on `device`; returns {"time": "self CPU" | "self device", "wall_ms", "operators":
    [{"operator", "calls", "self_ms", "total_ms"}] (the `top` by self time), "operator_calls"} and on CUDA
    "kernels" and "device_busy_ms".  `trace`: also write the Chrome trace there (.json or .json.gz)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    averages = [a for a in prof.key_averages() if a.device_type == DeviceType.CPU]  # operators, not kernels

    def self_us(a) -> float:
        return a.self_device_time_total if cuda else a.self_cpu_time_total

    def total_us(a) -> float:
        return a.device_time_total if cuda else a.cpu_time_total

    largest = sorted((a for a in averages if self_us(a) > 0), key=self_us, reverse=True)[:top]
    result = {"time": "self device" if cuda else "self CPU", "wall_ms": 1e3 * wall,
              "operator_calls": sum(a.count for a in averages if a.key.startswith("aten::")),
              "operators": [{"operator": a.key, "calls": a.count, "self_ms": self_us(a) / 1e3,
                             "total_ms": total_us(a) / 1e3} for a in largest]}
    if cuda:
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        result.update(kernels=len(kernels), device_busy_ms=sum(e.time_range.elapsed_us() for e in kernels) / 1e3)
    if trace is not None:
        result["trace"] = str(trace)
    return result
