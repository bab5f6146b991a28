"""Planning a sweep (`launch/sweep.py` writes and runs the plan): points -> trainings -> jobs.

Fit points are resolved by the training CLI itself (`launch/config.py`), so an unknown key or a bad value fails
here, naming the sweep file, the point and the key.  Points whose resolved training configs are identical train
once: `config_digest` hashes the resolved config without what only names the run (IDENTITY: `run`, its folders
and loggers) and without eval-only keys (`sweep_file.EVAL_ONLY_FIT_KEYS`).  Eval and command points are parsed
with dawn-train's own parser when the caller passes it."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from dawn_train.launch.config import ConfigError, checkpoint_dirs, resolve_fit_config
from dawn_train.launch.sweep_file import (
    EVAL_ONLY_FIT_KEYS,
    PROTOCOL_SEED,
    Point,
    Sweep,
    SweepError,
    cli_value,
    column_names,
    expand,
    label,
    short_key,
    slug,
)

IDENTITY = ("run", "ckpt_path", "trainer.default_root_dir", "trainer.logger", "checkpoint.dirpath")


@dataclass
class Training:
    index: int
    name: str
    values: dict
    seed: Optional[int]
    digest: str
    run_dir: str
    config: dict = field(repr=False, default_factory=dict)
    points: list[str] = field(default_factory=list)


@dataclass
class Job:
    index: int
    name: str
    kind: str  # "fit", "eval" or the sweep's command
    argv: list[str]
    run_dir: str
    env: dict
    needs: Optional[int] = None  # the job (a training) that must succeed first


@dataclass
class Plan:
    points: list[Point]
    trainings: list[Training] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def configs(self) -> dict[str, dict]:
        return {t.name: t.config for t in self.trainings}


def _outside(config: dict, run_dir: str) -> list[str]:
    """The run folders of a resolved fit config (trainer, checkpoints, loggers) not inside `run_dir`."""
    trainer = config.get("trainer") or {}
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    dirs = [str(d) for d in checkpoint_dirs(config)]
    dirs += [(lg.get("init_args") or {}).get("save_dir") for lg in loggers if isinstance(lg, dict)]
    root = Path(run_dir)
    return [d for d in dirs if d and Path(d) != root and root not in Path(d).parents]


def training_config(sweep: Sweep, name: str, values: dict, seed: Optional[int], tags: list[str],
                    sweep_values: dict, point: Point) -> dict:
    """Resolve one training with the training CLI: the sweep's overrides, the values, the seed offset and the
    run (`run.root` = the sweep's folder, `run.name`, W&B group, tags and swept values)."""
    values = {**sweep.fixed, **values, "run.root": str(sweep.out_dir), "run.name": name, "run.group": sweep.group,
              "run.tags+": tags, "run.sweep_values": sweep_values, **({"seed_offset": seed} if seed is not None else {})}
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
            override_file = Path(tmp) / f"{name}.yaml"
            override_file.write_text(yaml.safe_dump(overrides))
            config = resolve_fit_config([w for c in sweep.configs for w in ("-c", c)] + sweep.args
                                        + ["-c", str(override_file)])
    except ConfigError as exc:
        raise SweepError(f"{sweep.path}: point {point.index} ({point.name}) does not validate: {exc}") from exc
    run_dir = str(sweep.out_dir / name)
    outside = _outside(config, run_dir)
    if outside:
        raise SweepError(f"{sweep.path}: point {point.name}: {outside} are not under {run_dir}, so the points "
                         f"would share files; derive the run's directories from ${{run.root}}/${{run.name}} as "
                         f"experiments/base.yaml does")
    config["ckpt_path"] = None  # set per start by the array script (resume)
    return config


def config_digest(config: dict, run_dir: str, eval_only: bool = True) -> str:
    """Hash of a resolved training config without what only names the run and (`eval_only`, in a sweep that
    evaluates) without eval-only keys, which otherwise still set what validation samples with."""
    left_out = set(IDENTITY) | (set(EVAL_ONLY_FIT_KEYS) if eval_only else set())

    def strip(node, path: str):
        if isinstance(node, dict):
            return {k: strip(v, f"{path}{k}.") for k, v in node.items() if f"{path}{k}" not in left_out}
        if isinstance(node, list):
            return [strip(v, path) for v in node]
        return node.replace(run_dir, "<run>") if isinstance(node, str) else node

    text = json.dumps(strip(config, ""), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_trainings(sweep: Sweep, result: Plan) -> None:
    columns = column_names(sweep.keys)
    by_values: dict[str, Training] = {}
    by_digest: dict[str, Training] = {}
    for point in result.points:
        values = {k: v for k, v in point.values.items()
                  if not k.startswith("--") and not (sweep.evaluates and k in EVAL_ONLY_FIT_KEYS)}
        key = json.dumps([values, point.seed], sort_keys=True, default=str)
        if key not in by_values:
            name = point.name
            if sweep.evaluates:
                name = "-".join(["train", *([slug(label(values))] if values else []),
                                 *([f"seed={point.seed}"] if point.seed is not None else [])])[:80]
                taken = {t.name for t in result.trainings}
                name = name if name not in taken else f"{name}-{len(result.trainings)}"
            tags = [f"sweep:{sweep.name}", *(slug(f"{short_key(k)}={cli_value(v)}") for k, v in values.items()),
                    *([f"seed={point.seed}"] if point.seed is not None else [])]
            swept = {columns[k]: v for k, v in values.items()}
            swept.update({"seed": point.seed} if point.seed is not None else {})
            config = training_config(sweep, name, values, point.seed, tags, swept, point)
            run_dir = str(sweep.out_dir / name)
            digest = config_digest(config, run_dir, eval_only=sweep.evaluates)
            if digest not in by_digest:
                by_digest[digest] = Training(len(result.trainings), name, values, point.seed, digest, run_dir, config)
                result.trainings.append(by_digest[digest])
            by_values[key] = by_digest[digest]
        training = by_values[key]
        training.points.append(point.name)
        point.training, point.training_dir = training.name, training.run_dir
        if not sweep.evaluates:
            point.run_dir = training.run_dir
    for training in result.trainings:
        argv = ["fit", "-c", str(sweep.out_dir / "configs" / f"{training.name}.yaml")]
        result.jobs.append(Job(len(result.jobs), training.name, "fit", argv, training.run_dir,
                               job_env(sweep, training.name, training.run_dir, training.config["run"].get("tags") or [],
                                       "sweep-fit")))
        if not sweep.evaluates:
            for point in result.points:
                if point.training == training.name:
                    point.argv = argv


def job_env(sweep: Sweep, name: str, run_dir: str, tags: list[str], job_type: str) -> dict:
    return {"POINT_NAME": name, "RUN_DIR": run_dir, "WANDB_RUN_GROUP": sweep.group, "WANDB_TAGS": ",".join(tags),
            "WANDB_JOB_TYPE": job_type}


def validate_command(sweep: Sweep, point: Point, argv: list[str], parser: argparse.ArgumentParser) -> None:
    """Parse a point's command line with dawn-train's own parser."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
                raise SweepError(f"{sweep.path}: point {point.index} ({point.name}) does not validate: "
                                 f"{message}") from None


def _subcommand_exists(parser: argparse.ArgumentParser, command: list[str]) -> bool:
    for word in command:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            return False
        parser = subparsers[0].choices[word]
    return True


def eval_argv(sweep: Sweep, point: Point, training: Training) -> list[str]:
    """`dawn-train eval` of a point: its training's last checkpoint (and LFG), the sweep's eval arguments, the
    protocol seed (+ the point's repeat seed) and the point's eval options, into the point's folder."""
    point.eval_dir = point.run_dir
    options = {EVAL_ONLY_FIT_KEYS.get(k, k): v for k, v in point.values.items()
               if k.startswith("--") or k in EVAL_ONLY_FIT_KEYS}
    args = [str(a) for a in sweep.eval.get("args") or []]
    lfg = training.config["model"]["init_args"].get("lfg_checkpoint")
    seed = int(sweep.eval.get("seed", PROTOCOL_SEED)) + (point.seed or 0)
    return ["eval", "--ckpt", str(Path(training.run_dir) / "checkpoints" / "last.ckpt"),
            "--out", str(Path(point.run_dir) / "eval.json"),
            *(["--lfg", str(lfg)] if lfg and "--lfg" not in args else []), *args, f"--seed={seed}",
            *(f"{k}={cli_value(v)}" for k, v in options.items())]


def plan_commands(sweep: Sweep, result: Plan, parser: Optional[argparse.ArgumentParser], strict: bool) -> None:
    """Jobs of `dawn-train <command>`: one per point (no `eval`), or one eval per trained point."""
    command = ["eval"] if sweep.evaluates else sweep.command
    exists = parser is not None and _subcommand_exists(parser, command)
    trainings = {t.name: t for t in result.trainings}
    for point in result.points:
        if sweep.evaluates:
            argv = eval_argv(sweep, point, trainings[point.training])
        else:
            argv = [*sweep.command, *sweep.args, *([f"{sweep.out_arg}={point.run_dir}"] if sweep.out_arg else []),
                    *(f"{k}={cli_value(v)}" for k, v in {**sweep.fixed, **point.values}.items())]
        if exists:
            validate_command(sweep, point, argv, parser)
        point.argv = argv
        needs = trainings[point.training].index if sweep.evaluates else None
        result.jobs.append(Job(len(result.jobs), point.name, command[0] if not sweep.evaluates else "eval", argv,
                               point.run_dir, job_env(sweep, point.name, point.run_dir, point.tags,
                                                      "eval" if sweep.evaluates else "sweep-" + command[0]), needs))
    if not exists:
        message = (f"{sweep.path}: `dawn-train {' '.join(command)}` does not exist in this installation, so the "
                   f"points' options could not be validated" if parser is not None else
                   f"{sweep.path}: no dawn-train parser given, so the points' options of `dawn-train "
                   f"{' '.join(command)}` could not be validated")
        if strict:
            raise SweepError(message)
        result.warnings.append(message)


def plan(sweep: Sweep, strict: bool = True, parser: Optional[argparse.ArgumentParser] = None) -> Plan:
    """Expand and validate every point, then the trainings and jobs.  `parser` is dawn-train's command-line parser
    (`dawn_train.cli.build_parser()`), which validates eval and command points; without it they are rendered
    unvalidated, with a warning, and not submitted."""
    result = Plan(points=expand(sweep))
    if sweep.is_fit:
        plan_trainings(sweep, result)
    if not sweep.is_fit or sweep.evaluates:
        plan_commands(sweep, result, parser, strict)
    for job in result.jobs:
        if any("\n" in word for word in job.argv):
            raise SweepError(f"{sweep.path}: point {job.name}: a value contains a newline")
    return result
