"""Sweeps: a grid of config overrides -> one SLURM array job, task i = point i.

A sweep file (see `experiments/ablations/window.yaml`):

    name: a2v-window                 # W&B group and output folder runs/sweeps/<name> (out_dir: overrides)
    command: fit                     # fit: one training run per point; or another dawn-train command,
                                     #   e.g. [eval] to evaluate one checkpoint per point
    configs: [experiments/base.yaml, experiments/a2v/base.yaml, experiments/a2v/hdtf128.yaml,
              experiments/a2v/stage2.yaml]                # fit: the -c files, in order
    args: []                         # extra arguments for every point
    fixed: {trainer.max_steps: 1000} # overrides shared by every point
    grid:                            # the cartesian product of these lists
      model.init_args.model.init_args.window_size: [20, 40, 80, 200, null]
    out_arg: --out                   # non-fit commands: option that receives the point's folder
    slurm: {nodes: 1, gpus_per_node: 4, cpus_per_task: 8, time: "24:00:00", partition: gpu, max_parallel: 5}

Fit keys are dotted config keys (`--key=value` of `dawn-train fit`); other commands take option
names (`--window-size`).  Every point is validated before anything is written or submitted:
fit points are resolved by the training CLI itself (unknown key or bad value -> error naming the
sweep file, the point and the key), then written as one full config per point.  A point is a run:
the sweep sets `run.root` (the sweep's folder), `run.name` (the point), `run.group` (W&B group) and
appends the point's tags to `run.tags`; the config derives every directory from the run
(experiments/base.yaml), so point i lands in `<out_dir>/<point>`.  A config whose directories do not
follow the run is refused (points would share files).  Non-fit points are validated with
dawn-train's own parser when the caller passes it (`run_sweep(..., parser=build_parser())`).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from dawn_train.launch import slurm
from dawn_train.launch.config import ConfigError, checkpoint_dirs, resolve_fit_config

SWEEP_KEYS = {"name", "command", "configs", "args", "fixed", "grid", "out_dir", "out_arg", "group", "slurm"}
SLURM_KEYS = {"nodes", "gpus_per_node", "ntasks_per_node", "cpus_per_task", "mem", "time", "partition", "account",
              "max_parallel", "extra"}
TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "sweep.sbatch"


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the key."""


@dataclass
class Point:
    index: int
    name: str
    values: dict
    argv: list[str] = field(default_factory=list)
    run_dir: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    path: Path
    name: str
    command: list[str]
    grid: dict
    configs: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    fixed: dict = field(default_factory=dict)
    out_dir: Path = Path()
    out_arg: Optional[str] = None
    group: str = ""
    slurm: dict = field(default_factory=dict)

    @property
    def is_fit(self) -> bool:
        return self.command == ["fit"]


def cli_value(value: Any) -> str:
    """A YAML value as one command-line word (null, true, 3, [1, 2], text)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


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
    if not isinstance(name, str) or not _slug(name) or _slug(name) != name:
        raise SweepError(f"{path}: key 'name' must be a short name of letters, digits, '-', '_', '.' (got {name!r})")
    command = raw.get("command", "fit")
    command = [command] if isinstance(command, str) else command
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        raise SweepError(f"{path}: key 'command' must be a dawn-train subcommand such as fit or [eval]")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: key 'grid' must be a non-empty mapping of key -> list of values")
    fit = command == ["fit"]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid key '{key}' needs a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{path}: grid key '{key}' repeats a value: {values}")
        if fit and (not isinstance(key, str) or key.startswith("-") or not re.fullmatch(r"[A-Za-z_][\w.]*", key)):
            raise SweepError(f"{path}: grid key '{key}' must be a dotted fit config key such as model.init_args.lr")
        if not fit and (not isinstance(key, str) or not key.startswith("--")):
            raise SweepError(f"{path}: grid key '{key}' must be an option of `dawn-train {' '.join(command)}` "
                             f"such as --window-size")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: key 'fixed' must be a mapping of key -> value")
    both = sorted(set(fixed) & set(grid))
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
    return Sweep(path=path, name=name, command=command, grid=grid, configs=list(configs), args=[str(a) for a in args],
                 fixed=fixed, out_dir=out_dir, out_arg=raw.get("out_arg"), group=raw.get("group") or name,
                 slurm=slurm_opts)


def expand(sweep: Sweep) -> list[Point]:
    """The grid's cartesian product, in file order (the last key varies fastest)."""
    keys = list(sweep.grid)
    points = []
    for index, combo in enumerate(itertools.product(*(sweep.grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        label = "-".join(f"{k.lstrip('-').rsplit('.', 1)[-1]}={cli_value(v)}" for k, v in values.items())
        name = f"p{index:03d}-{_slug(label)}"[:80]
        tags = [f"sweep:{sweep.name}", *(_slug(f"{k.lstrip('-').rsplit('.', 1)[-1]}={cli_value(v)}")
                                           for k, v in values.items())]
        points.append(Point(index=index, name=name, values=values, run_dir=str(sweep.out_dir / name), tags=tags))
    return points


def _outside(config: dict, run_dir: str) -> list[str]:
    """The run folders of a resolved fit config (trainer, checkpoints, loggers) not inside `run_dir`."""
    trainer = config.get("trainer") or {}
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    dirs = [str(d) for d in checkpoint_dirs(config)]
    dirs += [(lg.get("init_args") or {}).get("save_dir") for lg in loggers if isinstance(lg, dict)]
    root = Path(run_dir)
    return [d for d in dirs if d and Path(d) != root and root not in Path(d).parents]


def fit_point_config(sweep: Sweep, point: Point) -> dict:
    """Resolve one fit point with the training CLI: the sweep's overrides, the point's values and the
    point's run (`run.root` = the sweep's folder, `run.name` = the point, W&B group and tags).  Every
    directory of the run follows from `run.root`/`run.name` in the config (experiments/base.yaml)."""
    values = {**sweep.fixed, **point.values, "run.root": str(sweep.out_dir), "run.name": point.name,
              "run.group": sweep.group, "run.tags+": point.tags}
    # Overrides go in as one more YAML file (not `--key=value`): YAML keeps null, lists and
    # types exactly, also inside nested class_path/init_args.
    overrides: dict = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        with tempfile.TemporaryDirectory() as tmp:
            override_file = Path(tmp) / f"{point.name}.yaml"
            override_file.write_text(yaml.safe_dump(overrides))
            config = resolve_fit_config([w for c in sweep.configs for w in ("-c", c)] + sweep.args
                                        + ["-c", str(override_file)])
    except ConfigError as exc:
        raise SweepError(f"{sweep.path}: point {point.index} ({point.name}) does not validate: {exc}") from exc
    outside = _outside(config, point.run_dir)
    if outside:
        raise SweepError(f"{sweep.path}: point {point.name}: {outside} are not under {point.run_dir}, so the points "
                         f"would share files; derive the run's directories from ${{run.root}}/${{run.name}} as "
                         f"experiments/base.yaml does")
    config["ckpt_path"] = None  # set per start by the array script (resume)
    return config


def _subcommand_exists(parser: argparse.ArgumentParser, command: list[str]) -> bool:
    for word in command:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            return False
        parser = subparsers[0].choices[word]
    return True


def validate_command_point(sweep: Sweep, point: Point, parser: argparse.ArgumentParser) -> None:
    """Parse a non-fit point's command line with dawn-train's own parser."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(point.argv)
        except SystemExit as exc:
            if exc.code:
                message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
                raise SweepError(f"{sweep.path}: point {point.index} ({point.name}) does not validate: "
                                 f"{message}") from None


def plan(sweep: Sweep, strict: bool = True, parser: Optional[argparse.ArgumentParser] = None,
         ) -> tuple[list[Point], dict[int, dict], list[str]]:
    """Expand and validate every point: (points with argv, fit configs by index, warnings).  `parser` is
    dawn-train's command-line parser (`dawn_train.cli.build_parser()`), which validates the points of a
    non-fit sweep; without it they are rendered unvalidated, with a warning, and not submitted."""
    points, configs, warnings = expand(sweep), {}, []
    exists = sweep.is_fit or (parser is not None and _subcommand_exists(parser, sweep.command))
    for point in points:
        if sweep.is_fit:
            configs[point.index] = fit_point_config(sweep, point)
            point.argv = ["fit", "-c", str(sweep.out_dir / "configs" / f"{point.name}.yaml")]
        else:
            out = [f"{sweep.out_arg}={point.run_dir}"] if sweep.out_arg else []
            point.argv = [*sweep.command, *sweep.args, *out,
                          *(f"{k}={cli_value(v)}" for k, v in {**sweep.fixed, **point.values}.items())]
            if exists:
                validate_command_point(sweep, point, parser)
        if any("\n" in word for word in point.argv):
            raise SweepError(f"{sweep.path}: point {point.name}: a value contains a newline")
    if not exists:
        message = (f"{sweep.path}: `dawn-train {' '.join(sweep.command)}` does not exist in this installation, "
                   f"so the points' options could not be validated" if parser is not None else
                   f"{sweep.path}: no dawn-train parser given, so the points' options of "
                   f"`dawn-train {' '.join(sweep.command)}` could not be validated")
        if strict:
            raise SweepError(message)
        warnings.append(message)
    return points, configs, warnings


def sbatch_options(sweep: Sweep, indices: list[int]) -> dict[str, str]:
    """`#SBATCH` options of the rendered array script."""
    opts = sweep.slurm
    gpus = int(opts.get("gpus_per_node", 0))
    tasks = int(opts.get("ntasks_per_node", gpus or 1))
    array = ",".join(str(i) for i in indices) + (f"%{opts['max_parallel']}" if opts.get("max_parallel") else "")
    out = {"--job-name": f"sweep-{sweep.name}", "--array": array, "--nodes": str(opts.get("nodes", 1)),
           "--ntasks-per-node": str(tasks), "--chdir": str(Path.cwd()),
           "--output": str((sweep.out_dir / "logs" / "%A_%a.out").resolve())}
    if gpus:
        out["--gpus-per-node"] = str(gpus)
    for key, option in (("cpus_per_task", "--cpus-per-task"), ("mem", "--mem"), ("time", "--time"),
                        ("partition", "--partition"), ("account", "--account")):
        if opts.get(key) not in (None, ""):
            out[option] = str(opts[key])
    for extra in opts.get("extra") or []:
        option, _, value = str(extra).partition("=")
        out[option] = value
    return out


def render_script(template: str, options: dict[str, str], variables: dict[str, str]) -> str:
    """Set `#SBATCH` options (replacing the template's line for the same option, else appending
    after the last directive) and the defaults of `NAME=${NAME:-...}` lines."""
    lines = template.splitlines()
    for option, value in options.items():
        line = f"#SBATCH {option}={value}" if value else f"#SBATCH {option}"
        hit = [i for i, text in enumerate(lines) if re.match(rf"#SBATCH\s+{re.escape(option)}(=|\s|$)", text)]
        if hit:
            lines[hit[0]] = line
        else:
            last = max((i for i, text in enumerate(lines) if text.startswith("#SBATCH")), default=0)
            lines.insert(last + 1, line)
    for name, value in variables.items():
        lines = [f"{name}=${{{name}:-{shlex.quote(value)}}}" if re.match(rf"{name}=\$\{{{name}:-", text) else text
                 for text in lines]
    return "\n".join(lines) + "\n"


def write_plan(sweep: Sweep, points: list[Point], configs: dict[int, dict], indices: list[int]) -> Path:
    """Write configs, per-point argument/env files, sweep.json and the rendered array script."""
    out = sweep.out_dir
    for sub in ("configs", "points", "logs", "status"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for point in points:
        if point.index in configs:
            (out / "configs" / f"{point.name}.yaml").write_text(
                f"# {sweep.name} point {point.index}: {json.dumps(point.values)} (from {sweep.path})\n"
                + yaml.safe_dump(configs[point.index], sort_keys=False))
        (out / "points" / f"{point.index:03d}.args").write_text("".join(w + "\n" for w in point.argv))
        env = {"POINT_NAME": point.name, "RUN_DIR": point.run_dir, "WANDB_RUN_GROUP": sweep.group,
               "WANDB_TAGS": ",".join(point.tags), "WANDB_JOB_TYPE": "sweep-" + sweep.command[0]}
        (out / "points" / f"{point.index:03d}.env").write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    record = {"name": sweep.name, "file": str(sweep.path), "group": sweep.group, "command": sweep.command,
              "points": [{"index": p.index, "name": p.name, "values": p.values, "argv": p.argv, "run_dir": p.run_dir,
                          "tags": p.tags} for p in points]}
    (out / "sweep.json").write_text(json.dumps(record, indent=1))
    if not TEMPLATE.is_file():
        raise SweepError(f"{TEMPLATE}: the sweep array template is missing (run from a dawn_train checkout)")
    script = render_script(TEMPLATE.read_text(), sbatch_options(sweep, indices),
                           {"SWEEP_DIR": str(out.resolve()), "DAWN_TRAIN": f"{sys.executable} -m dawn_train.cli",
                            "PYTHON": sys.executable})
    path = out / "sweep.sbatch"
    path.write_text(script)
    return path


def point_status(out_dir: Path, index: int) -> str:
    path = out_dir / "status" / f"{index:03d}"
    return path.read_text().split()[0] if path.is_file() else "missing"


def failed_points(sweep: Sweep, points: list[Point]) -> list[int]:
    """Points not finished successfully and not queued or running now."""
    record = sweep.out_dir / "sweep.json"
    if not record.is_file():
        raise SweepError(f"{sweep.out_dir}: no earlier submission of sweep {sweep.name} (sweep.json missing)")
    before = [p["name"] for p in json.loads(record.read_text())["points"]]
    if before != [p.name for p in points]:
        raise SweepError(f"{sweep.path}: the grid changed since {record} was written; give the sweep a new name")
    queued = set()
    jobs = sweep.out_dir / "jobs.txt"
    for job in (jobs.read_text().split() if jobs.is_file() else []):
        queued |= slurm.queued_array_tasks(job)
    return [p.index for p in points if point_status(sweep.out_dir, p.index) != "done" and p.index not in queued]


def run_sweep(path: str | Path, submit: bool = False, only_failed: bool = False,
              parser: Optional[argparse.ArgumentParser] = None) -> dict:
    """Validate, render and (with `submit`) submit a sweep; returns a summary.  `parser`: see `plan`."""
    sweep = load_sweep(path)
    if submit:
        slurm.require("sbatch")  # before minutes of validation
    points, configs, warnings = plan(sweep, strict=submit, parser=parser)
    indices = failed_points(sweep, points) if only_failed else [p.index for p in points]
    summary = {"sweep": sweep.name, "out_dir": str(sweep.out_dir), "group": sweep.group, "points": len(points),
               "to_run": indices, "warnings": warnings, "job": None}
    if not indices:
        summary["script"] = None
        return summary
    script = write_plan(sweep, points, configs, indices)
    summary["script"] = str(script)
    summary["sbatch"] = f"sbatch {script}"
    if submit:
        for index in indices:  # a resubmitted point starts with no stale status
            (sweep.out_dir / "status" / f"{index:03d}").unlink(missing_ok=True)
        job = slurm.sbatch(script)
        with open(sweep.out_dir / "jobs.txt", "a") as f:
            f.write(job + "\n")
        summary["job"] = job
    return summary
