"""`dawn-train report PATH ...`: compare runs, sweep points and evals side by side.

Reads local files only (`tracking/run_records.py`: run folders, `config.yaml`, sweeps, eval points), so it works for
offline W&B runs too.  Writes to `--out`:
    report.md, report.html  the comparison table (swept values as columns, the best value of each metric column
                            in bold by its direction, seeds as mean +- std) and the paper's layout for the
                            comparison: Table 5 (our FVD16 per sampling window beside the published one) when the
                            sampling window is swept, else Table 1 (our rows, then the published DAWN row)
    <metric>.png            one plot per val/train metric, every training run on the same axes
    metrics.json            the rows, their numbers and the best marks
    wandb_report.json       with `wandb`: the same comparison as a W&B Report definition (`tracking/wandb_report.py`),
                            built offline; `publish` saves it to W&B instead (online) and returns its URL"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Optional

from dawn_train.tracking.directions import best_index, is_number, metric_direction
from dawn_train.tracking.paper import TABLE1_COLUMNS, TABLE1_HDTF, TABLE1_HDTF_GROUND_TRUTH, TABLE5_FVD16, window_label
from dawn_train.tracking.run_records import Row, collect, group_seeds
from dawn_train.tracking.wandb_report import build_wandb_report, describe, publish, report_definition

HEADLINE = ("train/loss", "val/loss", "val/l1", "val/rc", *(f"val/{m}" for m in TABLE1_COLUMNS),
            *(f"eval/{m}" for m in TABLE1_COLUMNS))
WINDOW_COLUMN = "window_size"  # the sampling window's column (`--window-size` or the model's window_size)


def is_headline(metric: str) -> bool:
    # val/synth*: the synthetic ground-truth metrics (metrics/synthetic) and their still-frame baselines
    return metric in HEADLINE or metric.startswith(("train/loss", "val/loss", "val/synth/", "val/synth_still/"))


def smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_metric(runs: list[tuple[str, list]], metric: str, out: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, points in runs:
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


def format_value(value, spread=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if spread is not None and is_number(spread):
        text += f" +- {spread:.2g}"
    return text


def format_setting(value) -> str:
    """A swept value as the sweep file spells it (null = unset, e.g. full attention)."""
    return "null" if value is None else format_value(value)


def best_marks(rows: list[Row], metrics: list[str]) -> dict[str, list[int]]:
    """metric -> indices of the rows with its best value (none when every row has the same value)."""
    marks = {}
    for metric in metrics:
        values = [row.metrics.get(metric) for row in rows]
        numbers = {v for v in values if is_number(v)}
        target = next((row.ground_truth.get(metric) for row in rows if row.ground_truth.get(metric) is not None), None)
        if len(numbers) > 1:
            marks[metric] = best_index(values, metric_direction(metric), target)
    return marks


def comparison(rows: list[Row], metrics: Optional[list[str]]) -> dict:
    """The main table: {"header", "cells" (rows of (text, is_best)), "columns", "metrics", "best"}."""
    columns = list(dict.fromkeys(k for row in rows for k in row.values))
    names = sorted({k for row in rows for k in row.metrics})
    shown = metrics or [k for k in HEADLINE if k in names] + [k for k in names if k.startswith("eval/synth/")]
    marks = best_marks(rows, shown)
    seeds = any(row.seeds for row in rows)
    cells = []
    for i, row in enumerate(rows):
        line = [(row.name, False)] + [(format_setting(row.values.get(c)), False) for c in columns]
        if seeds:
            line.append((",".join(str(s) for s in row.seeds) or "-", False))
        line += [(format_value(row.metrics.get(m), row.spread.get(m)), i in marks.get(m, [])) for m in shown]
        cells.append(line)
    header = ["run", *columns, *(["seeds"] if seeds else []), *shown]
    return {"header": header, "cells": cells, "columns": columns, "metrics": shown, "best": marks}


def paper_layout(rows: list[Row], columns: list[str]) -> Optional[dict]:
    """Table 5 when the sampling window is swept, else Table 1 when there are eval numbers; None otherwise."""
    if WINDOW_COLUMN in columns:
        others = [c for c in columns if c != WINDOW_COLUMN]
        order = {w: i for i, w in enumerate(TABLE5_FVD16)}
        ranked = sorted(rows, key=lambda r: order.get(r.values.get(WINDOW_COLUMN), len(order)))
        fvd = [r.metrics.get("eval/FVD16") for r in ranked]
        best = best_index(fvd, "min")
        header = ["window", *others, "FVD16 (ours)", "FVD16 (paper)", "LSE-C (ours)", "LSE-D (ours)"]
        cells = [[(window_label(r.values.get(WINDOW_COLUMN)), False), *[(format_setting(r.values.get(c)), False)
                                                                        for c in others],
                  (format_value(r.metrics.get("eval/FVD16"), r.spread.get("eval/FVD16")), i in best),
                  (format_value(TABLE5_FVD16.get(r.values.get(WINDOW_COLUMN))), False),
                  (format_value(r.metrics.get("eval/LSE-C")), False), (format_value(r.metrics.get("eval/LSE-D")), False)]
                 for i, r in enumerate(ranked)]
        return {"title": "Paper Table 5: local attention window at sampling (FVD16, paper's best: 80)",
                "header": header, "cells": cells}
    if not any(k.startswith("eval/") for row in rows for k in row.metrics):
        return None
    metrics = [f"eval/{m}" for m in TABLE1_COLUMNS]
    marks = best_marks(rows, metrics)
    cells = [[(row.name, False)] + [(format_value(row.metrics.get(m), row.spread.get(m)), i in marks.get(m, []))
                                    for m in metrics] for i, row in enumerate(rows)]
    cells.append([("DAWN paper (HDTF)", False)] + [(format_value(TABLE1_HDTF[m]), False) for m in TABLE1_COLUMNS])
    cells.append([("ground truth, paper (HDTF)", False)]
                 + [(format_value(TABLE1_HDTF_GROUND_TRUTH.get(m)), False) for m in TABLE1_COLUMNS])
    return {"title": "Paper Table 1 layout (HDTF): ours, then the published DAWN and ground-truth rows",
            "header": ["", *TABLE1_COLUMNS],
            "cells": cells}


def markdown_table(header: list[str], cells: list[list[tuple[str, bool]]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"**{t}**" if best else t for t, best in line) + " |" for line in cells]
    return lines


def html_table(header: list[str], cells: list[list[tuple[str, bool]]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td><b>{html.escape(t)}</b></td>" if best else f"<td>{html.escape(t)}</td>"
                                    for t, best in line) + "</tr>" for line in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


def training_histories(rows: list[Row]) -> dict[str, list[tuple[str, list]]]:
    """metric -> [(training run name, points)], each training run once (sweep points may share one)."""
    seen, out = set(), {}
    for row in rows:
        if not row.training or row.training in seen:
            continue
        seen.add(row.training)
        for metric, points in row.history.items():
            out.setdefault(metric, []).append((Path(row.training).name, points))
    return out


def wandb_target(rows: list[Row]) -> tuple[str, Optional[str]]:
    """(project, group) of the compared runs: their W&B records' (default project dawn_train; a group only when
    they all share one)."""
    projects = {row.wandb.get("project") for row in rows if row.wandb.get("project")}
    groups = {row.wandb.get("group") for row in rows}
    return (projects.pop() if len(projects) == 1 else "dawn_train"), (groups.pop() if len(groups) == 1 else None)


def build_report(paths: list[str | Path], out: str | Path, metrics: Optional[list[str]] = None, wandb: bool = False,
                 publish_report: bool = False) -> dict:
    """Write the comparison of `paths` into `out`; returns {"markdown", "rows", "table", "paper", "plots"} and, with
    `wandb`, "wandb_report" (the definition file) and "wandb_summary" (what publishing creates), or with
    `publish_report` "wandb_url"."""
    out = Path(out)
    rows = group_seeds(collect(paths))  # reads (and refuses) the inputs before anything is written
    out.mkdir(parents=True, exist_ok=True)
    table = comparison(rows, metrics)
    paper = paper_layout(rows, table["columns"])
    histories = training_histories(rows)
    plotted = metrics or [k for k in histories if is_headline(k)]
    pictures = [p for p in (plot_metric(histories.get(k, []), k, out) for k in plotted) if p is not None]

    tables = markdown_table(table["header"], table["cells"])
    tables += ["", "Bold: the best value of each column (lower or higher by the metric; BAS and Blink/s closest to the "
               "ground truth).  val/*: the best validation value, train/*: the last, eval/*: `dawn-train eval`; "
               "seeds: mean +- std.", ""]
    if paper:
        tables += [f"## {paper['title']}", ""] + markdown_table(paper["header"], paper["cells"]) + [""]
    lines = ["# dawn_train comparison", "", *tables, *(f"![{p.stem}]({p.name})" for p in pictures)]
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines) + "\n")
    images = "".join(f'<figure><img src="{p.name}"><figcaption>{html.escape(p.stem)}</figcaption></figure>'
                     for p in pictures)
    paper_html = f"<h2>{html.escape(paper['title'])}</h2>{html_table(paper['header'], paper['cells'])}" if paper else ""
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>dawn_train report</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px}"
        "table{border-collapse:collapse}figure{display:inline-block}</style>"
        f"<h1>dawn_train comparison</h1>{html_table(table['header'], table['cells'])}{paper_html}{images}")
    record = {row.name: {"values": row.values, "seeds": row.seeds, "metrics": row.metrics, "std": row.spread,
                         "best_step": row.best_step, "training": row.training} for row in rows}
    best = {metric: [rows[i].name for i in indices] for metric, indices in table["best"].items()}
    (out / "metrics.json").write_text(json.dumps({"rows": record, "best": best}, indent=1, default=str))
    result = {"markdown": markdown, "rows": rows, "table": table, "paper": paper, "plots": pictures}
    project, group = wandb_target(rows)
    if publish_report:
        result["wandb_url"] = publish(rows, table, "\n".join(tables), project=project, group=group)
    elif wandb:
        report = build_wandb_report(rows, table, "\n".join(tables), project=project, group=group)
        result["wandb_report"] = out / "wandb_report.json"
        result["wandb_report"].write_text(report_definition(report))
        result["wandb_summary"] = describe(report)
    return result
