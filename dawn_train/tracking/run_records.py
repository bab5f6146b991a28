"""The rows of a comparison: what `dawn-train report` reads from run folders, sweeps and eval points.

A path given to the report is one of
    a sweep folder (`sweep.json`)       one row per point: its swept values, seed, training run and eval
    an eval point folder (`point.json`) one row: the point's values, its eval.json and its training run
    a run folder (`csv/metrics.csv`, `config.yaml`, maybe `eval.json`)  one row; the config keys that differ
                                        between the runs given become its columns
Anything else (a sweep's `points/`, `logs/` matched by a shell glob) is skipped with a warning.

A row's numbers: `val/*` the best logged value by metric direction (with its step), `train/*` the last
logged value, `eval/*` the eval's Table 1 numbers (`eval/synth/*` the synthetic-probe table).  Rows that differ
only in their seed form one group, reported as mean +- std over the seeds."""
from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from dawn_train.files import read_json
from dawn_train.log import get_logger
from dawn_train.tracking.directions import best_of, is_number, metric_direction
from dawn_train.tracking.eval_log import POINT_RECORD
from dawn_train.tracking.wandb_runs import read_run_record

log = get_logger(__name__)
# config keys that only say where a run lives or how W&B files it: never a compared setting
IDENTITY_KEYS = ("run.name", "run.root", "run.tags", "run.group", "run.sweep_values", "trainer.default_root_dir",
                 "trainer.logger", "checkpoint.dirpath", "ckpt_path")
MAX_COLUMNS = 8


@dataclass
class Row:
    """One compared run or sweep point (or, after `group_seeds`, the mean of its seeds)."""

    name: str
    values: dict = field(default_factory=dict)  # swept setting (column) -> value
    seed: Optional[int] = None
    metrics: dict = field(default_factory=dict)  # metric -> value (mean over seeds for a group)
    spread: dict = field(default_factory=dict)  # metric -> std over seeds (groups of >= 2 seeds)
    seeds: list = field(default_factory=list)
    ground_truth: dict = field(default_factory=dict)  # eval's ground-truth numbers (for "closest to" metrics)
    best_step: dict = field(default_factory=dict)  # val metric -> the step of its best value
    history: dict = field(default_factory=dict)  # metric -> [(step, value)] of the training run
    training: Optional[str] = None  # the training run's folder
    wandb: dict = field(default_factory=dict)  # {"project", "group", "id"} of the training run
    training_values: dict = field(default_factory=dict)  # the training run's own swept values (W&B config keys)


def read_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    path = run_dir / "csv" / "metrics.csv"
    history: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return history
    with path.open() as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                history.setdefault(key, []).append((step, float(value)))
    return history


def summarise(history: dict) -> tuple[dict, dict]:
    """({metric: value}, {metric: step}): val/* best by direction, everything else its last value."""
    values, steps = {}, {}
    for key, points in history.items():
        direction = metric_direction(key) if key.startswith("val/") else None
        step, value = best_of(points, direction if direction in ("min", "max") else None)
        values[key] = value
        if key.startswith("val/"):
            steps[key] = step
    return values, steps


def read_eval(path: Path) -> tuple[dict, dict]:
    """({eval/<metric>: value}, {metric: ground-truth value}) of an eval.json; empty when absent."""
    if not path.is_file():
        return {}, {}
    result = read_json(path, "eval result")
    if not isinstance(result, dict):
        raise ValueError(f"{path}: not an eval result (a JSON object expected)")
    metrics = {f"eval/{k}": v for k, v in (result.get("metrics") or {}).items() if is_number(v)}
    synthetic = (result.get("synthetic") or {}).get("generated") or {}
    metrics.update({f"eval/synth/{k}": v for k, v in synthetic.items() if is_number(v)})
    truth = {f"eval/{k}": v for k, v in (result.get("ground_truth") or {}).items() if is_number(v)}
    return metrics, truth


def training_values(run_dir: Path) -> dict:
    """A sweep training's swept values by column (`run.sweep_values` of its config.yaml), as its W&B config holds
    them flat (`stages/run_config.py`); eval-only settings are not among them.  {} for other runs."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text()) or {}
    return dict(((config.get("run") or {}).get("sweep_values")) or {})


def make_row(name: str, training: Optional[Path], eval_json: Optional[Path], values: dict, seed=None) -> Row:
    row = Row(name=name, values=dict(values), seed=seed, training=str(training) if training else None)
    if training is not None:
        row.history = read_history(training)
        row.metrics, row.best_step = summarise(row.history)
        record = read_run_record(training) or {}
        row.wandb = {k: record.get(k) for k in ("project", "group", "id")}
        row.training_values = training_values(training)
    if eval_json is not None:
        metrics, row.ground_truth = read_eval(eval_json)
        row.metrics.update(metrics)
    return row


def sweep_rows(folder: Path) -> list[Row]:
    record = json.loads((folder / "sweep.json").read_text())
    rows = []
    for point in record["points"]:
        training = Path(point["training_dir"]) if point.get("training_dir") else Path(point["run_dir"])
        eval_dir = Path(point["eval_dir"]) if point.get("eval_dir") else training
        rows.append(make_row(point["name"], training, eval_dir / "eval.json", point.get("columns") or point["values"],
                             point.get("seed")))
        rows[-1].wandb["group"] = record.get("group")
    return rows


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, path + "."))
        else:
            out[path] = value
    return out


def config_columns(rows: list[Row], configs: list[Optional[dict]]) -> None:
    """Give plain runs the config keys whose values differ between them as columns (by the key's last part,
    or the whole key where two share it): keys every config has, at most MAX_COLUMNS of them (runs of different
    stages differ everywhere: no setting is "the" difference, and none is shown)."""
    flats = [flat(c) if c else {} for c in configs if c is not None]
    if len(flats) < 2:
        return
    keys = sorted(set.intersection(*(set(f) for f in flats)))
    varying = [k for k in keys if not k.startswith(IDENTITY_KEYS)
               and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    if len(varying) > MAX_COLUMNS:
        log.info("report: the runs' configs differ in %d keys; no config columns", len(varying))
        return
    short = [k.rsplit(".", 1)[-1] for k in varying]
    for row, config in zip(rows, configs):
        if config is None:
            continue
        values = flat(config)
        row.values = {(s if short.count(s) == 1 else k): values.get(k) for k, s in zip(varying, short)}


def collect(paths: list[str | Path]) -> list[Row]:
    """Rows of every usable path (see the module docstring), in the order given; a path that is none of them is
    skipped with a warning, and no usable path at all is an error naming them."""
    rows, seen, plain, configs, skipped = [], set(), [], [], []
    for given in paths:
        folder = Path(given)
        key = str(folder.resolve())
        if key in seen:
            continue
        seen.add(key)
        if (folder / "sweep.json").is_file():
            rows += sweep_rows(folder)
        elif (folder / POINT_RECORD).is_file():
            point = json.loads((folder / POINT_RECORD).read_text())
            training = Path(point["training_dir"]) if point.get("training_dir") else None
            rows.append(make_row(point["point"], training, folder / "eval.json", point.get("values") or {},
                                 point.get("seed")))
            rows[-1].wandb["group"] = point.get("group")
        elif (folder / "csv" / "metrics.csv").is_file() or (folder / "eval.json").is_file():
            row = make_row(folder.name, folder, folder / "eval.json", {})
            rows.append(row)
            plain.append(row)
            config = folder / "config.yaml"
            configs.append(yaml.safe_load(config.read_text()) if config.is_file() else None)
        else:
            skipped.append(str(folder))
    if not rows:
        raise FileNotFoundError(f"{', '.join(map(str, paths))}: no run folder (csv/metrics.csv, eval.json), sweep "
                                f"folder (sweep.json) or eval point (point.json) among them")
    for folder in skipped:
        log.warning("report: skipped %s (not a run, sweep or eval point folder)", folder)
    config_columns(plain, configs)
    return rows


def seed_suffix(name: str, seed) -> str:
    suffix = f"-seed={seed}"
    return name[: -len(suffix)] if seed is not None and name.endswith(suffix) else name


def group_seeds(rows: list[Row]) -> list[Row]:
    """Rows with the same values and different seeds -> one row: mean of each metric, its std (sample, n >= 2)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = json.dumps(row.values, sort_keys=True, default=str) if row.seed is not None else f"run:{id(row)}"
        groups.setdefault(key, []).append(row)
    out = []
    for members in groups.values():
        if len(members) == 1 and members[0].seed is None:
            out.append(members[0])
            continue
        first = members[0]
        merged = Row(name=seed_suffix(first.name, first.seed), values=first.values, seeds=[m.seed for m in members],
                     ground_truth=first.ground_truth, history=first.history, training=first.training,
                     wandb=first.wandb, best_step=first.best_step, training_values=first.training_values)
        for metric in {k for m in members for k in m.metrics}:
            numbers = [m.metrics[metric] for m in members if is_number(m.metrics.get(metric))]
            if numbers:
                merged.metrics[metric] = statistics.fmean(numbers)
                merged.spread[metric] = statistics.stdev(numbers) if len(numbers) > 1 else math.nan
        out.append(merged)
    return out
