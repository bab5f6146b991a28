"""The child side of `dawn-train bench cases`: one case and one implementation, built, warmed up, timed (and, when
asked, compiled, FLOP-counted and profiled) in this process; `python -m dawn_train.bench.cases` calls `run_case` and
prints its result as one JSON line (see `bench/cases.py` for the cases and the options)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from dawn_train.bench.cases import CUDA_GRAPH_MODES, PEAK_TFLOPS, WARNING


def run_case(case: str, implementation: str = "fast", *, size: str = "demo", device: str = "auto", threads: int = 2,
             repeats: int = 3, warmup: int = 1, steps: int = 20, compile: bool = False, bf16: bool = False,
             budget_gib: Optional[float] = None, batch: Optional[int] = None, flops: bool = False,
             peak_tflops: Optional[float] = None, compile_mode: str = "default", attn_backend: str = "math",
             profile: int = 0, trace_dir: Optional[str] = None) -> dict:
    """Build, (estimate,) warm up and time one case in this process; see the module docstring."""
    import torch

    from dawn_train.bench.attention import measure, resolve_device
    from dawn_train.bench.case_workloads import BUILDERS, Setup

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    setup = Setup(size=size, implementation=implementation, device=resolve_device(device), steps=steps, batch=batch,
                  attn_backend=attn_backend)
    work = BUILDERS[case](setup)
    result = {"case": case, "implementation": implementation, "implementation_applied": setup.applied,
              "shapes": work.shapes, "params": work.params, "device": str(setup.device), "pid": os.getpid(),
              "threads": torch.get_num_threads(), "compile": compile, "precision": "bf16-mixed" if bf16 else "32-true",
              "attn_backend": attn_backend if setup.backend_applied else None}  # None: no model of the case takes one
    if compile:
        result["compile_mode"] = compile_mode
    if setup.device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(setup.device)
    # the same code is 1.1x on one CPU and 1.3x on another (BLAS and oneDNN pick other kernels): say where it ran
    result.update(cpu_name=cpu_name(), torch_version=torch.__version__)
    if work.estimate is not None:
        from dawn_train.inference.memory import gib, memory_budget

        estimate, budget = work.estimate(), memory_budget(setup.device, budget_gib)
        result.update(estimate_bytes=estimate, budget_bytes=budget)
        if estimate > budget:
            which = "--memory-budget" if budget_gib is not None else "available memory"
            return {**result, "refused": True, "message": f"{case} ({implementation}) refused: estimated peak "
                    f"{gib(estimate)} is above the {which} {gib(budget)}"}
    if bf16:  # what Lightning's bf16-mixed precision does around a step
        step = work.fn

        def under_autocast():
            with torch.autocast(setup.device.type, dtype=torch.bfloat16):
                return step()

        work.fn = under_autocast
    if compile:
        result["compile_fallback"] = compile_workload(work, case, mode=compile_mode)
    result.update(measure(work.fn, setup.device, repeats=repeats, warmup=warmup))
    if work.samples:
        result["samples_per_s"] = work.samples / result["seconds"]
    if flops:
        result.update(utilisation(count_flops(work.fn), result, peak_tflops))
    if profile:
        from dawn_train.bench.profile import profile_call

        label = implementation + ("+bf16" if bf16 else "") + ("+compile" if compile else "")
        trace = Path(trace_dir) / f"{case}.{label}.json.gz" if trace_dir is not None else None
        try:
            result["profile"] = profile_call(work.fn, setup.device, top=profile, trace=trace)
        except Exception as exc:  # the profile is extra: a profiler failure must not cost the timed figures
            result["profile"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"{WARNING} {case} ({label}) not profiled: {result['profile']['error']}", file=sys.stderr)
    return result


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 9B45", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"), from /proc/cpuinfo
    on Linux, else what `platform` knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def count_flops(fn) -> Optional[int]:
    """Floating-point operations of one call of `fn` (FlopCounterMode: matmuls, convolutions, attention; forward
    and backward), or None where the counter cannot trace it (a compiled graph, say)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            fn()
        return int(counter.get_total_flops())
    except Exception as exc:
        print(f"{WARNING} FLOPs not counted ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        return None


def device_peak_tflops(result: dict) -> Optional[float]:
    """The dense peak of PEAK_TFLOPS for the run's precision and device name, or None."""
    name = result.get("device_name") or ""
    if "PCIe" in name or "NVL" in name:  # lower clocks and power than the SXM parts of the table: not guessed
        return None
    return next((peak for key, peak in PEAK_TFLOPS.get(result["precision"], {}).items() if key in name), None)


def utilisation(flops: Optional[int], result: dict, peak_tflops: Optional[float]) -> dict:
    """{flops, tflops, peak_tflops, mfu} of a timed run; None where not known."""
    if not flops:
        return {"flops": flops, "tflops": None, "peak_tflops": None, "mfu": None}
    tflops = flops / result["seconds"] / 1e12
    peak = peak_tflops or device_peak_tflops(result)
    return {"flops": flops, "tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None}


def compile_workload(work, case: str, calls: int = 2, mode: str = "default") -> Optional[str]:
    """Wrap `work.compile_targets` in torch.compile (`mode`) and make `calls` untimed calls: the compiling one and
    one more, so that a recompilation for state the first call leaves behind (a cache, a step counter) is not timed.
    A mode that replays CUDA graphs starts a new step of them at every call of `work.fn`: one call is one step (a
    DDIM sample invokes the UNet once or twice per denoising step; its graphs are recorded once, then replayed).
    On failure put the eager methods back, print one warning line and return the reason (None when compiled)."""
    import torch

    wrapped, eager_fn = [], work.fn
    options = {} if mode == "default" else {"mode": mode}
    if mode in CUDA_GRAPH_MODES:
        def step_of_graphs():
            torch.compiler.cudagraph_mark_step_begin()
            return eager_fn()

        work.fn = step_of_graphs
    try:
        for module, names in work.compile_targets:
            for name in names:
                setattr(module, name, torch.compile(getattr(module, name), **options))
                wrapped.append((module, name))
        for _ in range(calls):
            work.fn()
        return None
    except Exception as exc:  # any failure of the compiler stack: time the eager path instead
        for module, name in wrapped:
            module.__dict__.pop(name, None)
        work.fn = eager_fn
        torch._dynamo.reset()
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        print(f"{WARNING} torch.compile failed for {case} ({reason}); timed without compile", file=sys.stderr)
        return reason
