"""`dawn-train report RUN_DIR ...`: compare runs side by side (table + plots).

Each run directory is what a stage config writes (`runs/<name>/`): `csv/metrics.csv` from the
CSVLogger, `config.yaml` from LightningCLI and, after `dawn-train eval`, `eval.json`.  The report
is a folder with `report.md`, `report.html`, `metrics.json` and one PNG per plotted metric, every
run on the same axes.  It reads local files only, so it works for offline W&B runs too."""
from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

# Default table columns and plots: losses, reconstruction errors and the paper's Table 1 metrics.
TABLE_METRICS = ("FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM", "BAS", "Blink/s")
HEADLINE = ("train/loss", "val/loss", "val/l1", "val/rc", *(f"val/{m}" for m in TABLE_METRICS),
            *(f"eval/{m}" for m in TABLE_METRICS))


def is_headline(metric: str) -> bool:
    return metric in HEADLINE or metric.startswith(("train/loss", "val/loss"))


def read_run(run_dir: Path) -> dict:
    """{"name", "history": {metric: [(step, value)]}, "final": {metric: value}, "eval": {...}}"""
    csv_path = run_dir / "csv" / "metrics.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no csv/metrics.csv (is this a dawn_train run directory?)")
    history: dict[str, list[tuple[int, float]]] = {}
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                history.setdefault(key, []).append((step, float(value)))
    final = {key: points[-1][1] for key, points in history.items()}
    evaluation = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    final.update({f"eval/{k}": v for k, v in evaluation.get("metrics", {}).items() if isinstance(v, (int, float))})
    return {"name": run_dir.name, "path": str(run_dir), "history": history, "final": final}


def smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_metric(runs: list[dict], metric: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(run["name"], run["history"][metric]) for run in runs if metric in run["history"]]
    if not series:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, points in series:
        steps, values = zip(*points)
        window = max(1, len(values) // 20) if metric.startswith("train/") else 1
        axis.plot(steps, smooth(list(values), window), label=name)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = out / (metric.replace("/", "_") + ".png")
    figure.savefig(path)
    plt.close(figure)
    return path


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_report(run_dirs: list[str | Path], out: str | Path, metrics: list[str] | None = None) -> Path:
    """Write the comparison report of `run_dirs` into `out`; returns the path of report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [read_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ValueError("report: no run directories given")
    names = sorted({k for run in runs for k in run["final"]})
    columns = metrics or [k for k in HEADLINE if k in names]
    plotted = metrics or [k for k in names if is_headline(k) and not k.startswith("eval/")]
    pictures = [p for p in (plot_metric(runs, k, out) for k in plotted) if p is not None]
    rows = [[run["name"], *[format_value(run["final"].get(c)) for c in columns]] for run in runs]

    lines = ["# dawn_train run comparison", "", "| run | " + " | ".join(columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Final logged value of each metric (eval/* from `dawn-train eval`; `--metric` picks others).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in pictures]
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines) + "\n")

    table = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", *columns])
    images = "".join(f'<figure><img src="{p.name}"><figcaption>{html.escape(p.stem)}</figcaption></figure>'
                     for p in pictures)
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>dawn_train report</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px}"
        "table{border-collapse:collapse}figure{display:inline-block}</style>"
        f"<h1>dawn_train run comparison</h1><table><tr>{header}</tr>{table}</table>{images}")
    (out / "metrics.json").write_text(json.dumps({run["name"]: run["final"] for run in runs}, indent=1))
    return markdown
