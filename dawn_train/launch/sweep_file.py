"""Sweep files: reading, checking and expanding them into points (`launch/sweep.py` plans and runs them).

    name: a2v-window                 # W&B group and output folder runs/sweeps/<name> (out_dir: overrides)
    command: fit                     # fit: training runs; or another dawn-train command, e.g. [eval]
    configs: [experiments/base.yaml, ...]           # fit: the -c files, in order
    args: []                         # extra arguments for every point's command
    fixed: {trainer.max_steps: 1000} # overrides shared by every point
    grid:                            # the cartesian product of these lists; a list of such mappings = the
      --window-size: [20, 40, 80, 200, null]        #   union of their products, in order
    seeds: [0, 1, 2]                 # optional: every point once per seed (fit: --seed_offset; eval: seed + s)
    eval:                            # fit sweeps: evaluate every point after its training, one job per point
      args: [--shards, datasets/hdtf/shards_128, --max-frames, "200", --steps, "20"]
      seed: 1234                     # the protocol's fixed seed (default)
    out_arg: --out                   # non-fit commands: option that receives the point's folder
    slurm: {nodes: 1, gpus_per_node: 4, cpus_per_task: 8, time: "24:00:00", partition: gpu, max_parallel: 5}

Grid keys of a fit sweep are dotted config keys (`--key=value` of `dawn-train fit`) or, in a sweep with `eval`,
options of `dawn-train eval` (`--window-size`).  Keys in EVAL_ONLY_FIT_KEYS are config keys that change only
sampling: a sweep that evaluates passes them to eval instead of training with them, so points that differ only
there train once.  Every point gets a column name per key (its last part, `--window-size` -> window_size; the
whole key where two keys share a last part), used by the W&B config and the report."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

SWEEP_KEYS = {"name", "command", "configs", "args", "fixed", "grid", "seeds", "eval", "out_dir", "out_arg", "group",
              "slurm"}
EVAL_KEYS = {"args", "seed"}
SLURM_KEYS = {"nodes", "gpus_per_node", "ntasks_per_node", "cpus_per_task", "mem", "time", "partition", "account",
              "max_parallel", "extra"}
# fit config key -> the eval option that sets the same thing at sampling time
EVAL_ONLY_FIT_KEYS = {"model.init_args.model.init_args.window_size": "--window-size"}
PROTOCOL_SEED = 1234  # `dawn-train eval`'s fixed seed (official protocol)


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the key."""


@dataclass
class Point:
    index: int
    name: str
    values: dict  # grid key -> value
    argv: list[str] = field(default_factory=list)
    run_dir: str = ""
    tags: list[str] = field(default_factory=list)
    seed: Optional[int] = None
    columns: dict = field(default_factory=dict)  # column name -> value
    training: Optional[str] = None  # the training run this point's numbers come from (fit sweeps)
    training_dir: Optional[str] = None
    eval_dir: Optional[str] = None  # where its eval writes eval.json and point.json (sweeps with `eval`)


@dataclass
class Sweep:
    path: Path
    name: str
    command: list[str]
    grids: list[dict]
    configs: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    fixed: dict = field(default_factory=dict)
    seeds: Optional[list[int]] = None
    eval: Optional[dict] = None
    out_dir: Path = Path()
    out_arg: Optional[str] = None
    group: str = ""
    slurm: dict = field(default_factory=dict)

    @property
    def is_fit(self) -> bool:
        return self.command == ["fit"]

    @property
    def evaluates(self) -> bool:
        return self.is_fit and self.eval is not None

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for grid in self.grids for k in grid))


def cli_value(value: Any) -> str:
    """A YAML value as one command-line word (null, true, 3, [1, 2], text)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def short_key(key: str) -> str:
    return key.lstrip("-").rsplit(".", 1)[-1]


def column_names(keys: list[str]) -> dict[str, str]:
    """grid key -> column name: the key's last part with `-` as `_`, or the whole key where two share it."""
    short = {k: short_key(k).replace("-", "_") for k in keys}
    return {k: (s if list(short.values()).count(s) == 1 else k.lstrip("-")) for k, s in short.items()}


def _check_grid(path: Path, grid, fit: bool, evaluates: bool, command: list[str]) -> None:
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: key 'grid' must be a non-empty mapping of key -> list of values (or a list of them)")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid key '{key}' needs a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{path}: grid key '{key}' repeats a value: {values}")
        option = isinstance(key, str) and key.startswith("--")
        if fit and option and not evaluates:
            raise SweepError(f"{path}: grid key '{key}' must be a dotted fit config key, or an eval option in a "
                             f"sweep with an `eval:` section")
        if fit and not option and (not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", key)):
            raise SweepError(f"{path}: grid key '{key}' must be a dotted fit config key such as model.init_args.lr")
        if not fit and not option:
            raise SweepError(f"{path}: grid key '{key}' must be an option of `dawn-train {' '.join(command)}` "
                             f"such as --window-size")


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file: every problem names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with at least `name` and `grid`")
    unknown = sorted(set(raw) - SWEEP_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(SWEEP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not slug(name) or slug(name) != name:
        raise SweepError(f"{path}: key 'name' must be a short name of letters, digits, '-', '_', '.' (got {name!r})")
    command = raw.get("command", "fit")
    command = [command] if isinstance(command, str) else command
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        raise SweepError(f"{path}: key 'command' must be a dawn-train subcommand such as fit or [eval]")
    fit = command == ["fit"]
    evaluation = raw.get("eval")
    if evaluation is not None:
        if not fit:
            raise SweepError(f"{path}: key 'eval' evaluates trained points; it belongs to fit sweeps")
        if not isinstance(evaluation, dict) or set(evaluation) - EVAL_KEYS:
            raise SweepError(f"{path}: key 'eval' must be a mapping with keys {sorted(EVAL_KEYS)}")
        if not isinstance(evaluation.get("args") or [], list) or not isinstance(evaluation.get("seed", 0), int):
            raise SweepError(f"{path}: key 'eval.args' must be a list of words and 'eval.seed' an integer")
    grids = raw.get("grid")
    grids = grids if isinstance(grids, list) and grids else [grids]
    for grid in grids:
        _check_grid(path, grid, fit, evaluation is not None, command)
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                              or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise SweepError(f"{path}: key 'seeds' must be a list of distinct integers, got {seeds!r}")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: key 'fixed' must be a mapping of key -> value")
    both = sorted(set(fixed) & {k for grid in grids for k in grid})
    if both:
        raise SweepError(f"{path}: key(s) {both} in both 'grid' and 'fixed'")
    configs = raw.get("configs") or []
    if fit and not configs:
        raise SweepError(f"{path}: key 'configs' must list the stage config(s) of a fit sweep")
    if not fit and configs:
        raise SweepError(f"{path}: key 'configs' is for fit sweeps; pass -c files of `{command[0]}` in 'args'")
    for config in configs:
        if not Path(config).is_file():
            raise SweepError(f"{path}: key 'configs': {config} does not exist")
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise SweepError(f"{path}: key 'args' must be a list of command-line words")
    slurm_opts = raw.get("slurm") or {}
    unknown = sorted(set(slurm_opts) - SLURM_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) slurm.{unknown}; allowed: {sorted(SLURM_KEYS)}")
    for key in ("nodes", "gpus_per_node", "ntasks_per_node", "cpus_per_task", "max_parallel"):
        if key in slurm_opts and not (isinstance(slurm_opts[key], int) and slurm_opts[key] >= 0):
            raise SweepError(f"{path}: key 'slurm.{key}' must be a non-negative integer, got {slurm_opts[key]!r}")
    out_dir = Path(raw.get("out_dir") or f"runs/sweeps/{name}")
    return Sweep(path=path, name=name, command=command, grids=grids, configs=list(configs),
                 args=[str(a) for a in args], fixed=fixed, seeds=seeds, eval=evaluation, out_dir=out_dir,
                 out_arg=raw.get("out_arg"), group=raw.get("group") or name, slurm=slurm_opts)


def label(values: dict) -> str:
    return "-".join(f"{short_key(k)}={cli_value(v)}" for k, v in values.items())


def expand(sweep: Sweep) -> list[Point]:
    """Every grid's cartesian product, in file order (the last key varies fastest), each once per seed."""
    points, columns = [], column_names(sweep.keys)
    combos = [dict(zip(grid, combo)) for grid in sweep.grids for combo in itertools.product(*grid.values())]
    for number, values in enumerate(combos):
        for seed in sweep.seeds or [None]:
            suffix = "" if seed is None else f"-seed={seed}"
            name = f"p{number:03d}-{slug(label(values))}"[:80 - len(suffix)] + suffix
            tags = [f"sweep:{sweep.name}", *(slug(f"{short_key(k)}={cli_value(v)}") for k, v in values.items()),
                    *([f"seed={seed}"] if seed is not None else [])]
            points.append(Point(index=len(points), name=name, values=values, run_dir=str(sweep.out_dir / name),
                                tags=tags, seed=seed, columns={columns[k]: v for k, v in values.items()}))
    return points
