"""The table `dawn-train bench cases` prints from its result (`cases.bench_cases`): a row per case with each run's
seconds, peak memory and ratios, the throughput columns of `--flops`, and a block per run profiled with `--profile`."""
from __future__ import annotations

from typing import Optional

from dawn_train.bench.cases import BF16, BF16_COMPILED, COMPILED

MIB = 2 ** 20

TABLE_COLUMNS = ("case", "shapes", "reference s", "fast s", "speed-up", "reference peak MiB", "fast peak MiB",
                 "memory ratio")


def table_columns(result: dict) -> tuple[str, ...]:
    runs = [r for r in result["implementations"] if r != "reference"]
    return (TABLE_COLUMNS + ((f"{COMPILED} s",) if COMPILED in result["implementations"] else ())
            + ((f"{BF16} s", "bf16 speed-up", f"{BF16} peak MiB") if BF16 in result["implementations"] else ())
            + ((f"{BF16_COMPILED} s",) if BF16_COMPILED in result["implementations"] else ())
            + (tuple(f"{r} {what}" for r in runs for what in ("TFLOP/s", "MFU", "samples/s")) if result.get("flops")
               else ()))


def _throughput(run: Optional[dict]) -> list[str]:
    """TFLOP/s, MFU and samples/s of a run measured with --flops ('-' where not known)."""
    run = run or {}
    return [f"{run['tflops']:.2f}" if run.get("tflops") is not None else "-",
            f"{100 * run['mfu']:.1f} %" if run.get("mfu") is not None else "-",
            f"{run['samples_per_s']:.2f}" if run.get("samples_per_s") is not None else "-"]


def _seconds(run: Optional[dict]) -> str:
    if not run:
        return "-"
    if "error" in run:
        return "error"
    if run.get("refused"):
        return f"refused (est. {run['estimate_bytes'] / 2 ** 30:.1f} GiB)"
    text = f"{run['seconds']:.3f}" if run["seconds"] < 100 else f"{run['seconds']:.0f}"
    return text + (" (eager)" if run.get("compile_fallback") else "")


def _mib(run: Optional[dict]) -> str:
    return f"{run['peak_bytes'] / MIB:,.0f}" if run and "peak_bytes" in run else "-"


def _ratio(value: Optional[float], same: bool) -> str:
    return "-" if value is None else f"{value:.2f}" + (" (same model)" if same else "")


def table_rows(result: dict) -> list[list[str]]:
    """Rows of :func:`table_columns`, one per case."""
    rows = []
    for entry in result["cases"]:
        ref, fast, same = entry.get("reference"), entry.get("fast"), entry.get("same_model", False)
        row = [entry["case"], entry.get("shapes", ""), _seconds(ref), _seconds(fast), _ratio(entry.get("speedup"), same),
               _mib(ref), _mib(fast), _ratio(entry.get("memory_ratio"), same)]
        if COMPILED in result["implementations"]:
            row.append(_seconds(entry.get(COMPILED)))
        if BF16 in result["implementations"]:
            row += [_seconds(entry.get(BF16)), _ratio(entry.get("speedup_bf16"), False), _mib(entry.get(BF16))]
        if BF16_COMPILED in result["implementations"]:
            row.append(_seconds(entry.get(BF16_COMPILED)))
        if result.get("flops"):
            row += [cell for r in result["implementations"] if r != "reference" for cell in _throughput(entry.get(r))]
        rows.append(row)
    return rows


def errors(result: dict) -> list[str]:
    """'case (implementation): message' of every run that failed."""
    return [f"{e['case']} ({label}): {run['error']}" for e in result["cases"] for label, run in e.items()
            if isinstance(run, dict) and "error" in run]


def profile_table(name: str, profile: dict):
    """A run's `--profile` figures as a rich table: its largest operators by self time."""
    from rich.table import Table

    if "error" in profile:
        return Table(title=f"profile of {name}: not profiled ({profile['error']})")

    where = (f"{profile['kernels']:,} kernels, device busy {profile['device_busy_ms']:.1f} ms of "
             if "kernels" in profile else "")
    title = (f"profile of {name}: {where}{profile['wall_ms']:.1f} ms wall, {profile['operator_calls']:,} operator "
             f"calls" + (f"; trace {profile['trace']}" if profile.get("trace") else ""))
    table = Table(title=title)
    for column in ("operator", "calls", f"{profile['time']} ms", "total ms"):
        table.add_column(column)
    for op in profile["operators"]:
        table.add_row(op["operator"], str(op["calls"]), f"{op['self_ms']:.2f}", f"{op['total_ms']:.2f}")
    return table
