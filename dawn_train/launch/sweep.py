"""Sweeps: a sweep file (`launch/sweep_file.py`) -> trainings and evals as jobs, run as SLURM job arrays
(`--submit`) or one after the other on this machine (`--local`).

Fit sweeps.  Every point is resolved by the training CLI itself before anything is written (unknown key or bad
value -> error naming the sweep file, the point and the key).  Points whose resolved training configs are
identical train once: the digest is a hash of the resolved config without what only names the run (`run`,
its folders and loggers) and without eval-only keys, so their evals share the checkpoint.  Repeat seeds are
separate trainings (`seed_offset`).  A training is a run (`run.root` = the sweep's folder, `run.name`, W&B group
and tags, `run.sweep_values` = its swept values by column); its config lands in `configs/<run>.yaml`.
Without `eval` a training is named after its (first) point, `p000-...`, as a point is a run.  With `eval`,
trainings are `train-<their values>` and every point is one eval job in its own folder `p000-...`
(`eval.json`, `point.json` = its values, seed and training), after its training: the Table 5 protocol is one
training evaluated at several sampling windows.

Other commands (`command: [eval]`, ...): one job per point, validated with dawn-train's own parser when the
caller passes it (`run_sweep(..., parser=build_parser())`).

Output in `<out_dir>`: `sweep.json` (points, trainings, jobs), `configs/`, `points/<job>.args|.env` (what the
array task runs), `status/<job>` (`done|failed|skipped <rc> <job id>`), `logs/`, `sweep.sbatch` (trainings or
commands) and `eval.sbatch` (evals, submitted after the trainings with `--dependency=afterok`)."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import yaml

from dawn_train.launch import slurm
from dawn_train.launch.sweep_file import Point, Sweep, SweepError, column_names, expand, load_sweep
from dawn_train.launch.sweep_plan import Job, Plan, Training, plan

__all__ = ["Job", "Plan", "Point", "Sweep", "SweepError", "Training", "expand", "failed_points", "load_sweep", "plan",
           "run_sweep"]
TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "sweep.sbatch"


# ---- writing, submitting, running -------------------------------------------------------------------------
def sbatch_options(sweep: Sweep, indices: list[int], job_name: str) -> dict[str, str]:
    """`#SBATCH` options of a rendered array script."""
    opts = sweep.slurm
    gpus = int(opts.get("gpus_per_node", 0))
    tasks = int(opts.get("ntasks_per_node", gpus or 1))
    array = ",".join(str(i) for i in indices) + (f"%{opts['max_parallel']}" if opts.get("max_parallel") else "")
    out = {"--job-name": job_name, "--array": array, "--nodes": str(opts.get("nodes", 1)),
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
    import re

    lines = template.splitlines()
    for option, value in options.items():
        if any(c.isspace() for c in value):  # sbatch reads a directive's value in double quotes as one word
            value = '"' + value.replace('"', '\\"') + '"'
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


def write_plan(sweep: Sweep, result: Plan, indices: list[int]) -> dict[str, Path]:
    """Write configs, per-job argument/env files, eval points' point.json, sweep.json and the array scripts
    of the jobs in `indices` ({"sweep": trainings or commands, "eval": evals}, those with jobs)."""
    out = sweep.out_dir
    for sub in ("configs", "points", "logs", "status"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for training in result.trainings:
        (out / "configs" / f"{training.name}.yaml").write_text(
            f"# {sweep.name} training {training.name} of points {', '.join(training.points)}: "
            f"{json.dumps(training.values)} (from {sweep.path})\n" + yaml.safe_dump(training.config, sort_keys=False))
    for job in result.jobs:
        (out / "points" / f"{job.index:03d}.args").write_text("".join(w + "\n" for w in job.argv))
        (out / "points" / f"{job.index:03d}.env").write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in job.env.items()))
    for point in result.points:
        if point.eval_dir:
            Path(point.eval_dir).mkdir(parents=True, exist_ok=True)
            (Path(point.eval_dir) / "point.json").write_text(json.dumps(
                {"sweep": sweep.name, "group": sweep.group, "point": point.name, "values": point.columns,
                 "seed": point.seed, "training": point.training, "training_dir": point.training_dir}, indent=1))
    record = {"name": sweep.name, "file": str(sweep.path), "group": sweep.group, "command": sweep.command,
              "columns": column_names(sweep.keys),
              "points": [asdict(p) for p in result.points],
              "trainings": [{k: v for k, v in asdict(t).items() if k != "config"} for t in result.trainings],
              "jobs": [asdict(j) for j in result.jobs]}
    (out / "sweep.json").write_text(json.dumps(record, indent=1, default=str))
    if not TEMPLATE.is_file():
        raise SweepError(f"{TEMPLATE}: the sweep array template is missing (run from a dawn_train checkout)")
    # DAWN_TRAIN and PYTHON are command lines that the script splits as a shell does: an interpreter path with
    # spaces (a checkout in "My Projects") is one quoted word
    variables = {"SWEEP_DIR": str(out.resolve()), "DAWN_TRAIN": shlex.join([sys.executable, "-m", "dawn_train.cli"]),
                 "PYTHON": shlex.quote(sys.executable)}
    scripts = {}
    for script, kinds, job_name in (("sweep", lambda k: k != "eval", f"sweep-{sweep.name}"),
                                    ("eval", lambda k: k == "eval", f"eval-{sweep.name}")):
        chosen = [i for i in indices if kinds(result.jobs[i].kind)]
        if chosen:
            scripts[script] = out / f"{script}.sbatch"
            scripts[script].write_text(render_script(TEMPLATE.read_text(), sbatch_options(sweep, chosen, job_name),
                                                     variables))
    return scripts


def point_status(out_dir: Path, index: int) -> str:
    path = out_dir / "status" / f"{index:03d}"
    return path.read_text().split()[0] if path.is_file() else "missing"


def failed_points(sweep: Sweep, jobs: list) -> list[int]:
    """Jobs (or points of a sweep whose points are its jobs) not finished successfully and not queued or running."""
    record = sweep.out_dir / "sweep.json"
    if not record.is_file():
        raise SweepError(f"{sweep.out_dir}: no earlier submission of sweep {sweep.name} (sweep.json missing)")
    written = json.loads(record.read_text())
    before = [j["name"] for j in written.get("jobs") or written["points"]]
    if before != [j.name for j in jobs]:
        raise SweepError(f"{sweep.path}: the grid changed since {record} was written; give the sweep a new name")
    queued = set()
    ids = sweep.out_dir / "jobs.txt"
    for job in (ids.read_text().split() if ids.is_file() else []):
        queued |= slurm.queued_array_tasks(job)
    return [j.index for j in jobs if point_status(sweep.out_dir, j.index) != "done" and j.index not in queued]


def run_local(sweep: Sweep, result: Plan, indices: list[int]) -> dict[str, str]:
    """Run the jobs in `indices` here, one after the other (trainings first), each as `python -m dawn_train.cli`
    with its environment; an eval whose training failed is skipped.  Returns {job name: status}."""
    states: dict[str, str] = {}
    for index in sorted(indices, key=lambda i: (result.jobs[i].kind == "eval", i)):
        job = result.jobs[index]
        status = sweep.out_dir / "status" / f"{index:03d}"
        if job.needs is not None and point_status(sweep.out_dir, job.needs) != "done":
            states[job.name] = "skipped"
            status.write_text(f"skipped - local (training {result.jobs[job.needs].name} did not finish)\n")
            continue
        argv = job.argv
        resume = slurm.resume_path(argv) if argv[:1] == ["fit"] else None  # as the array script: continue the run
        argv = [*argv, f"--ckpt_path={resume}"] if resume else argv
        with open(sweep.out_dir / "logs" / f"local_{index:03d}.out", "w") as log:
            code = subprocess.run([sys.executable, "-m", "dawn_train.cli", *argv], stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, **job.env}).returncode
        states[job.name] = "done" if code == 0 else "failed"
        status.write_text(f"{states[job.name]} {code} local\n")
    return states


# what --submit adds to the eval array: it starts once every training task has finished well
EVAL_AFTER = ("--dependency=afterok:{job}", "--kill-on-invalid-dep=yes")


def submit_command(scripts: dict[str, Path]) -> str:
    """The shell command that submits the rendered scripts as `--submit` does: the eval array after the training
    array (`EVAL_AFTER`), paths quoted for a shell."""
    if "sweep" in scripts and "eval" in scripts:
        # "${job%%;*}": the job id of `--parsable`'s "id[;cluster]", expanded by the shell (double quotes)
        after = " ".join(f'"{option.format(job="${job%%;*}")}"' for option in EVAL_AFTER)
        return (f"job=$(sbatch --parsable {shlex.quote(str(scripts['sweep']))}) && "
                f"sbatch {after} {shlex.quote(str(scripts['eval']))}")
    return " ".join(["sbatch", *(shlex.quote(str(s)) for s in scripts.values())])


def run_sweep(path: str | Path, submit: bool = False, only_failed: bool = False,
              parser: Optional[argparse.ArgumentParser] = None, local: bool = False) -> dict:
    """Validate, render and (with `submit`) submit a sweep, or run it here (`local`); returns a summary."""
    sweep = load_sweep(path)
    if submit and local:
        raise SweepError("--submit and --local exclude each other")
    if submit:
        slurm.require("sbatch")  # before minutes of validation
    result = plan(sweep, strict=submit or local, parser=parser)
    indices = failed_points(sweep, result.jobs) if only_failed else [j.index for j in result.jobs]
    summary = {"sweep": sweep.name, "out_dir": str(sweep.out_dir), "group": sweep.group, "points": len(result.points),
               "trainings": len(result.trainings), "evals": sum(j.kind == "eval" for j in result.jobs),
               "to_run": indices, "warnings": result.warnings, "job": None, "eval_job": None, "local": None,
               "script": None}
    if not indices:
        return summary
    scripts = write_plan(sweep, result, indices)
    summary["script"] = str(scripts.get("sweep") or scripts.get("eval"))
    summary["sbatch"] = submit_command(scripts)
    for index in indices if (submit or local) else []:  # a rerun point starts with no stale status
        (sweep.out_dir / "status" / f"{index:03d}").unlink(missing_ok=True)
    if local:
        summary["local"] = run_local(sweep, result, indices)
    elif submit:
        first = slurm.sbatch(scripts["sweep"]) if "sweep" in scripts else None
        after = [option.format(job=first) for option in EVAL_AFTER] if first else []
        second = slurm.sbatch(scripts["eval"], options=after) if "eval" in scripts else None
        with open(sweep.out_dir / "jobs.txt", "a") as f:
            f.write("".join(f"{j}\n" for j in (first, second) if j))
        summary["job"], summary["eval_job"] = first or second, second if first else None
    return summary
