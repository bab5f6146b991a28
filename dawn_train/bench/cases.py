"""`dawn-train bench cases`: the cases of the performance issue, the reference and the fast implementation side by
side, each run in a fresh process.

    lfg_step_full  LFG train step, B=2: VGG19 perceptual pyramid + equivariance (LFGStage.losses), Adam step
    lfg_step_l1    LFG train step, B=2: the flow autoencoder + multi-scale L1 only
    lfg_targets    the frozen LFG's A2V training targets of one 40-frame clip (flow, occlusion, reference feature)
    a2v_step_t20   A2V-FDM train step, T=20, B=1: forward -> loss -> backward -> AdamW step (no LFG)
    unet_t40       one UNet denoise call, T=40, window 80 (+-40 frames), no grad
    unet_t200      the same at T=200
    unet_t600      the same at T=600 (long: not run by default)
    sample_t200    a 200-frame DDIM generation (--steps) + the LFG decode of all 200 frames (long: not by default)
    pbnet_step     PBNet pose train step, B=4, T=200

Shapes and models: `case_workloads.py` (demo sizes by default, `release_size` = the official released models).
The child's measuring (`run_case`, FLOPs, compile, profile) is `case_run.py`; the table is `case_table.py`.
Every (case, implementation) runs `python -m dawn_train.bench.cases --case NAME ...` in a fresh interpreter, which
builds the models, runs `warmup` untimed calls and reports the median time of `repeats` calls and the peak memory
above what was loaded (`bench.attention.measure`: CPU peak RSS via VmHWM, CUDA max allocated) as one JSON line.
`implementation` "reference" = the official path (masked full temporal attention, per-module cross-attention,
plain math kernels), "fast" = the optimised one; speed-up = reference time / fast time, memory ratio = reference
peak / fast peak.  A case whose models take no `implementation` argument runs once; both columns show that run
(ratio 1.00, `same_model`).  `compile`: the fast implementation again with the UNet and the LFG generator wrapped in
`torch.compile` (column "fast+compile"; with `bf16` also "fast+bf16+compile"); where compilation fails the run is
timed eagerly with a one-line warning.  `compile_mode` is torch.compile's `mode`: "reduce-overhead" replays CUDA
graphs (each timed call is one step of them: `torch.compiler.cudagraph_mark_step_begin` before it).
`attn_backend`: the A2V-FDM's attention kernels, "math" (`build_a2v`'s default) or "sdpa" (torch's fused kernels,
what experiments/a2v/base.yaml trains with; on a CPU a learned bias with grad makes torch use its math kernels).
`profile` N: one more call of each run under torch.profiler, its N largest operators by self time (`bench.profile`;
on CUDA also the kernels launched and the device's busy time); `trace_dir`: that call's Chrome trace there as well.
`bf16`: the fast implementation again under bf16 autocast (column "fast+bf16", speed-up reference / fast+bf16): what a
run with `trainer.precision: bf16-mixed` computes (matrix products and convolutions in bfloat16, which CPUs with
AMX or AVX512-BF16 run several times faster, reductions and losses in float32).  It is lower precision, not the same
numbers: the table states it beside the float32 runs, never instead of them.
`batch`: the batch of the train-step cases (default: each case's own, B=2 LFG, B=1 A2V-FDM, B=4 PBNet); a GPU needs
larger ones to be busy.  `flops`: one more call of each run under `torch.utils.flop_counter.FlopCounterMode` counts
its floating-point operations (matrix products, convolutions, attention kernels: what the tensor cores do; forward and
backward), giving `flops` per call, `tflops` achieved (flops / median seconds) and, where the device's dense peak for
the run's precision is known (`PEAK_TFLOPS`, or `peak_tflops` given), `mfu` = achieved / peak, the model FLOP
utilisation.  Train-step runs also report `samples_per_s` (batch / median seconds).
A UNet case whose estimated peak is above the memory budget (`budget_gib`, default: what the device has available)
is refused, and says so, before it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from dawn_train.launch.allocator import keep_freed_memory
from dawn_train.stages.config_errors import ConfigError

CASES = ("lfg_step_full", "lfg_step_l1", "lfg_targets", "a2v_step_t20", "unet_t40", "unet_t200", "unet_t600",
         "sample_t200", "pbnet_step")
LONG_CASES = ("unet_t600", "sample_t200")
DEFAULT_CASES = tuple(c for c in CASES if c not in LONG_CASES)
IMPLEMENTATIONS = ("reference", "fast")
COMPILED = "fast+compile"
BF16 = "fast+bf16"
BF16_COMPILED = "fast+bf16+compile"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ATTN_BACKENDS = ("math", "sdpa")  # the A2V-FDM's `attn_backend`
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # inductor replays CUDA graphs in these (on CUDA)
WARNING = "bench cases: warning:"
# Dense (no sparsity) peak TFLOP/s per precision of the devices whose name contains the key, from the vendors'
# datasheets (SXM parts).  float32 is absent on purpose: on CUDA, convolutions run as TF32 by default and matrix
# products do not, so no single float32 peak is honest; give --peak-tflops for it, or for another device.
PEAK_TFLOPS = {"bf16-mixed": {"H200": 989.4, "H100": 989.4, "A100": 312.0}}


class BenchCaseError(ConfigError):
    """A `bench cases` command line that cannot run (an unknown case or implementation): a usage error, exit 2."""


def parse_names(text: str | Sequence[str], known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchCaseError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
                             f"choose from {', '.join(known)}")
    return names


# ---- the parent: one fresh process per (case, implementation) ---------------------------------------------------
def child_command(case: str, implementation: str, *, size: str, device: str, threads: int, repeats: int, warmup: int,
                  steps: int, compile: bool = False, bf16: bool = False, budget_gib: Optional[float] = None,
                  batch: Optional[int] = None, flops: bool = False, peak_tflops: Optional[float] = None,
                  compile_mode: str = "default", attn_backend: str = "math", profile: int = 0,
                  trace_dir: Optional[str] = None) -> list[str]:
    args = [sys.executable, "-m", "dawn_train.bench.cases", "--case", case, "--impl", implementation, "--size", size,
            "--device", device, "--threads", str(threads), "--repeats", str(repeats), "--warmup", str(warmup),
            "--steps", str(steps), "--attn-backend", attn_backend]
    if compile:
        args += ["--compile", "--compile-mode", compile_mode]
    if bf16:
        args.append("--bf16")
    if budget_gib is not None:
        args += ["--memory-budget", str(budget_gib)]
    if batch is not None:
        args += ["--batch", str(batch)]
    if flops:
        args.append("--flops")
    if peak_tflops is not None:
        args += ["--peak-tflops", str(peak_tflops)]
    if profile:
        args += ["--profile", str(profile)]
    if trace_dir is not None:
        args += ["--trace-dir", str(trace_dir)]
    return args


def run_child(args: list[str], threads: int, timeout: Optional[float] = None) -> tuple[dict, list[str]]:
    """(the child's JSON result, or {"error": ...} with its last stderr line; its warning lines).  A child still
    running after `timeout` seconds is killed and its run is an error: the other runs go on."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"killed after {timeout:g} s (--run-timeout)"}, []
    warnings = [line for line in proc.stderr.splitlines() if line.startswith(WARNING)]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1]), warnings
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0].strip()[:300]}"}, warnings


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if numerator is None or not denominator or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def add_ratios(entry: dict) -> dict:
    """speedup = reference s / fast s, memory_ratio = reference peak / fast peak (None where one is missing)."""
    ref, fast = entry.get("reference", {}), entry.get("fast", {})
    entry["speedup"] = ratio(ref.get("seconds"), fast.get("seconds"))
    entry["memory_ratio"] = ratio(ref.get("peak_bytes"), fast.get("peak_bytes"))
    if COMPILED in entry:
        entry["speedup_compile"] = ratio(ref.get("seconds"), entry[COMPILED].get("seconds"))
    if BF16 in entry:
        entry["speedup_bf16"] = ratio(ref.get("seconds"), entry[BF16].get("seconds"))
        entry["memory_ratio_bf16"] = ratio(ref.get("peak_bytes"), entry[BF16].get("peak_bytes"))
    if BF16_COMPILED in entry:
        entry["speedup_bf16_compile"] = ratio(ref.get("seconds"), entry[BF16_COMPILED].get("seconds"))
    return entry


def describe(run: dict) -> str:
    if "error" in run:
        return "error"
    if run.get("refused"):
        return "refused"
    return f"{run['seconds']:.3g} s"


def bench_cases(cases: str | Sequence[str] = DEFAULT_CASES, implementations: str | Sequence[str] = IMPLEMENTATIONS, *,
                release_size: bool = False, threads: int = 2, repeats: int = 3, warmup: int = 1, steps: int = 20,
                compile: bool = False, bf16: bool = False, budget_gib: Optional[float] = None, device: str = "auto",
                batch: Optional[int] = None, flops: bool = False, peak_tflops: Optional[float] = None,
                compile_mode: str = "default", attn_backend: str = "math", profile: int = 0,
                trace_dir: Optional[str] = None, run_timeout: Optional[float] = None, progress: bool = True) -> dict:
    """Run every case with every implementation (reference first) in fresh processes; returns
    {"cases": [{case, shapes, reference: {...}, fast: {...}, speedup, memory_ratio, same_model, ...}], settings}.
    A run is {seconds, peak_bytes, ...}, {refused, estimate_bytes, budget_bytes, message} or {error}."""
    names = parse_names(cases, CASES, "case")
    impls = [i for i in IMPLEMENTATIONS if i in parse_names(implementations, IMPLEMENTATIONS, "implementation")]
    if repeats < 1 or warmup < 0 or threads < 1:
        raise BenchCaseError(f"need repeats >= 1, warmup >= 0 and threads >= 1 (got {repeats}, {warmup}, {threads})")
    if (batch is not None and batch < 1) or (peak_tflops is not None and peak_tflops <= 0) or profile < 0:
        raise BenchCaseError(f"need batch >= 1, peak TFLOP/s > 0 and profile >= 0 (got {batch}, {peak_tflops}, "
                             f"{profile})")
    if run_timeout is not None and run_timeout <= 0:
        raise BenchCaseError(f"need --run-timeout > 0 seconds (got {run_timeout})")
    if trace_dir is not None and not profile:
        raise BenchCaseError("--trace-dir needs --profile N (the trace is of the profiled call)")
    parse_names([compile_mode], COMPILE_MODES, "compile mode")
    parse_names([attn_backend], ATTN_BACKENDS, "attention backend")
    if compile_mode != "default" and not compile:
        raise BenchCaseError(f"--compile-mode {compile_mode} needs --compile (it is the mode of the compiled column)")
    size = "release" if release_size else "demo"
    common = dict(size=size, device=device, threads=threads, repeats=repeats, warmup=warmup, steps=steps,
                  budget_gib=budget_gib, batch=batch, flops=flops, peak_tflops=peak_tflops, compile_mode=compile_mode,
                  attn_backend=attn_backend, profile=profile,
                  trace_dir=None if trace_dir is None else str(Path(trace_dir).resolve()))
    runs = impls + ([COMPILED] if compile else []) + ([BF16] if bf16 else []) + ([BF16_COMPILED] if compile and bf16
                                                                              else [])
    results = []
    for index, name in enumerate(names, 1):
        start = time.perf_counter()
        if progress:
            print(f"bench cases [{index}/{len(names)}] {name}:", end="", file=sys.stderr, flush=True)
        entry, warnings = {"case": name}, []
        for label in runs:
            first = entry.get("reference") or entry.get("fast") or {}
            if label == "fast" and first.get("implementation_applied") is False:
                entry["fast"], entry["same_model"] = dict(first, implementation="fast"), True
            else:
                impl = "fast" if label in (COMPILED, BF16, BF16_COMPILED) else label
                entry[label], said = run_child(child_command(name, impl, compile=label in (COMPILED, BF16_COMPILED),
                                                             bf16=label in (BF16, BF16_COMPILED), **common), threads,
                                                run_timeout)
                warnings += said
            entry.setdefault("shapes", entry[label].get("shapes", ""))
            if progress:
                print(f" {label} {describe(entry[label])}", end="", file=sys.stderr, flush=True)
        entry.setdefault("same_model", not any(entry[r].get("implementation_applied") for r in runs if r in entry))
        results.append(add_ratios(entry))
        if progress:
            speedup = f", speed-up {entry['speedup']:.2f}" if entry.get("speedup") else ""
            print(f"{speedup} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
            for line in warnings + [entry[r]["message"] for r in runs if entry.get(r, {}).get("refused")]:
                print(f"  {line}", file=sys.stderr, flush=True)
    device = next((e[r]["device"] for e in results for r in runs if "device" in e.get(r, {})), device)  # resolved
    device_name = next((e[r]["device_name"] for e in results for r in runs if "device_name" in e.get(r, {})), None)
    host = next(({key: e[r].get(key) for key in ("cpu_name", "torch_version", "allocator")} for e in results for r in runs
                 if "cpu_name" in e.get(r, {})), {"cpu_name": None, "torch_version": None, "allocator": None})
    return {"size": size, "device": device, "device_name": device_name, **host, "threads": threads, "repeats": repeats,
            "warmup": warmup, "steps": steps, "batch": batch, "flops": flops, "implementations": runs,
            "compile_mode": compile_mode if compile else None, "attn_backend": attn_backend, "cases": results}


def main(argv: Optional[list[str]] = None) -> int:
    """The child entry: `python -m dawn_train.bench.cases --case NAME ...` prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m dawn_train.bench.cases", description=main.__doc__)
    parser.add_argument("--case", required=True, choices=CASES)
    parser.add_argument("--impl", default="fast", choices=IMPLEMENTATIONS)
    parser.add_argument("--size", default="demo", choices=("demo", "release"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES)
    parser.add_argument("--attn-backend", default="math", choices=ATTN_BACKENDS)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--trace-dir", default=None)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--memory-budget", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--flops", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args(argv)
    from dawn_train.bench.case_run import run_case  # the child side (it imports this module's constants)

    allocator = "freed memory kept" if keep_freed_memory() else "glibc defaults"  # as `dawn-train` runs
    result = run_case(args.case, args.impl, size=args.size, device=args.device, threads=args.threads,
                      repeats=args.repeats, warmup=args.warmup, steps=args.steps, compile=args.compile,
                      bf16=args.bf16, budget_gib=args.memory_budget, batch=args.batch, flops=args.flops,
                      peak_tflops=args.peak_tflops, compile_mode=args.compile_mode,
                      attn_backend=args.attn_backend, profile=args.profile, trace_dir=args.trace_dir)
    print(json.dumps({**result, "allocator": allocator}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
