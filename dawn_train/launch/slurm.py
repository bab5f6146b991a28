"""Thin wrappers over sbatch / squeue / scontrol, and the requeue helpers the sbatch scripts call.

Every call fails with a `SlurmError` that says what is missing (no `sbatch` on PATH, a refused
submission with SLURM's own message), and every wait has a deadline.

Requeue: `slurm/train.sbatch` and `slurm/sweep.sbatch` run with `--signal=SIGUSR1@90` and
`--requeue`.  Lightning's SLURMEnvironment (auto_requeue=True, its default under SLURM) catches
SIGUSR1, saves `<default_root_dir>/hpc_ckpt_<n>.ckpt` and requeues the job; a job requeued by
hand (`scontrol requeue`) or after a node failure has only its periodic `last.ckpt`.  On every
start the scripts ask `python -m dawn_train.launch.slurm resume-path -- fit ARGS` for the newest of
both and pass it as `--ckpt_path`, so the global step, optimizer and data epoch continue.  A run folder
that holds CSV logs but no checkpoint yet (a start that died before its first checkpoint) answers
`last`: a fresh fit refuses a folder that holds a run (stages/run_folder.py), a resume without a
checkpoint starts the run over in its own folder.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

from dawn_train.launch.config import checkpoint_dirs, resolve_fit_config

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}


class SlurmError(RuntimeError):
    """A SLURM command that is missing or refused; the message says which and why."""


def require(command: str = "sbatch") -> str:
    path = shutil.which(command)
    if path is None:
        raise SlurmError(f"`{command}` not found on PATH: this machine is not a SLURM submit host. Run on a login "
                         f"node, install the SLURM client tools, or start a one-node test cluster as root with "
                         f"scripts/slurm_cluster.sh; `dawn-train sweep FILE --dry-run` renders the job without submitting.")
    return path


def _run(argv: list[str], timeout: float = 60) -> str:
    require(argv[0])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"`{' '.join(argv)}` did not answer within {timeout:.0f} s (is slurmctld up?)") from exc
    if proc.returncode != 0:
        raise SlurmError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def sbatch(script: str | Path, args: Iterable[str] = (), options: Iterable[str] = (), cwd: Optional[str] = None) -> str:
    """Submit `script` with sbatch `options` and script `args`; returns the job id."""
    require("sbatch")
    argv = ["sbatch", "--parsable", *options, str(script), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch refused {script}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]


def job_records(job_id: str) -> list[dict]:
    """`scontrol show job -o JOB` as dicts (one per array task); [] once SLURM forgot the job."""
    require("scontrol")
    proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return []
        raise SlurmError(f"scontrol show job {job_id}: {proc.stderr.strip()}")
    records = []
    for line in proc.stdout.splitlines():
        if line.strip():
            records.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return records


def job_states(job_id: str) -> dict[str, str]:
    """{task id ("123" or "123_4"): state} of a job or job array."""
    states = {}
    for rec in job_records(job_id):
        key = f"{rec['ArrayJobId']}_{rec['ArrayTaskId']}" if rec.get("ArrayTaskId") else rec.get("JobId", job_id)
        states[key] = rec.get("JobState", "UNKNOWN")
    return states


def queued_array_tasks(job_id: str) -> set[int]:
    """Array task indices of `job_id` still pending or running (squeue; ranges expanded)."""
    require("squeue")
    proc = subprocess.run(["squeue", "-h", "-r", "-j", str(job_id), "-o", "%K %T"], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:  # finished long ago and purged
            return set()
        raise SlurmError(f"squeue -j {job_id}: {proc.stderr.strip()}")
    out = proc.stdout
    tasks = set()
    for line in out.splitlines():
        task, _, state = line.partition(" ")
        if task.isdigit() and state not in FINISHED:
            tasks.add(int(task))
    return tasks


def wait(job_id: str, timeout: float, poll: float = 2.0, until: frozenset = frozenset(FINISHED)) -> dict[str, str]:
    """Poll until every task of `job_id` is in `until` (default: finished); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(job_id)
        if states and all(s in until for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM job {job_id} not done after {timeout:.0f} s: {states}")
        time.sleep(poll)


def requeue(job_id: str, start_now: bool = False) -> None:
    """`scontrol requeue`; SLURM then holds the job ~2 min (Reason=BeginTime) unless `start_now`."""
    _run(["scontrol", "requeue", str(job_id)])
    if start_now:  # the hold is set once the old run has ended: wait for PENDING first
        wait(job_id, timeout=120, poll=0.5, until=frozenset({"PENDING"}))
        _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])


def cancel(job_id: str, signal: Optional[str] = None) -> None:
    _run(["scancel", *([f"--signal={signal}"] if signal else []), str(job_id)])


def newest_checkpoint(dirs: Iterable[str | Path]) -> Optional[Path]:
    """Newest `hpc_ckpt_*.ckpt` or `last*.ckpt` (file, or DeepSpeed directory) directly in `dirs`."""
    candidates = []
    for d in dirs:
        d = Path(d)
        if d.is_dir():
            candidates += [p for p in d.iterdir() if p.suffix == ".ckpt" and re.match(r"^(hpc_ckpt_\d+|last(-v?\d+)?)$", p.stem)]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def resume_path(argv: list[str]) -> Optional[Path | str]:
    """The checkpoint a `dawn-train ARGV` job should resume from: the newest one of its run, "last" for a run
    folder without a checkpoint yet, None for a fresh start or a non-fit command."""
    from dawn_train.stages.run_folder import run_files  # lightning: only for this helper, not every command

    if not argv or argv[0] != "fit" or "--ckpt_path" in argv or any(a.startswith("--ckpt_path=") for a in argv):
        return None
    config = resolve_fit_config(argv[1:])
    newest = newest_checkpoint(checkpoint_dirs(config))
    if newest is not None:
        return newest
    root = (config.get("trainer") or {}).get("default_root_dir")
    return "last" if root and run_files(root) else None


def main(argv: list[str]) -> int:
    """`python -m dawn_train.launch.slurm resume-path -- fit ARGS` prints `RESUME=<path or nothing>`."""
    if argv[:1] == ["resume-path"]:
        rest = argv[1:]
        rest = rest[1:] if rest[:1] == ["--"] else rest
        path = resume_path(rest)
        print(f"RESUME={path or ''}")  # one marked line: imports may print log lines to stdout
        return 0
    print("usage: python -m dawn_train.launch.slurm resume-path -- fit ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
