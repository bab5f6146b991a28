"""W&B side of `dawn-train eval`: the eval's own run and its numbers in the training run's summary.

The eval run (job type "eval", offline by default) lives in `<out folder>/eval_wandb` and holds:
    config      the eval settings (window, steps, seed, frames, ...), the checkpoint and, for a sweep point
                (`point.json` beside the output), the point's swept values flat
    eval/<m>    every Table 1 number, with best/last summaries by metric direction
    eval/table  ground truth / generated rows; eval/videos: per-video numbers with the generated video (+ audio);
                eval/samples: the same videos as media; eval/blinks: a synthetic eval's eye-openness traces (when given)
    input       the checkpoint artifact it evaluated (`tracking.wandb_runs`: same artifact as training logged)
Project and group are the training run's (its `wandb_run.json`), `WANDB_RUN_GROUP` and a sweep point's
group winning.  Then the training run is resumed by id (offline: a new offline-run folder of the same run) and
its summary gets `eval/<tag>/<m>`, `eval/<tag>/settings` and `eval/<tag>/run`, where the tag is the sweep point
(`p001-window-size=40`) or, outside a sweep, the sampling window (`window=80`, `window=none`): the parallel evals of
a sweep (`max_parallel`) each write their own keys, none overwrites another's.  Outside a sweep `eval/<m>` also
holds the latest eval's numbers.  The summary writes of evals of one training run take turns (a lock file in
the run folder, `eval_summary.lock`), and a run W&B still reports in use is waited for (`RUN_IN_USE_WAIT_S`)."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator, Optional

from dawn_train.tracking.directions import is_number, wandb_summary
from dawn_train.tracking.wandb_runs import checkpoint_artifact, declare_input, read_run_record, run_dir_of_checkpoint

POINT_RECORD = "point.json"  # written by `dawn-train sweep` into every eval point's folder
DEFAULT_PROJECT = "dawn_train"
SUMMARY_LOCK = "eval_summary.lock"  # in the training run's folder: evals of one run write its summary in turn
RUN_IN_USE_WAIT_S = 300.0


def read_point(folder: str | Path) -> Optional[dict]:
    path = Path(folder) / POINT_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _init(**kwargs):
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(**kwargs)


def summary_tag(point: dict, settings: dict) -> str:
    """The part of an eval's summary keys that tells evals of one training run apart: the sweep point, else
    the sampling window."""
    if point.get("point"):
        return str(point["point"])
    window = settings.get("window_size")
    return f"window={'none' if window is None else window}"


def summary_update(point: dict, settings: dict, numbers: dict, eval_id: str) -> dict:
    """What one eval writes into the training run's summary (see the module docstring)."""
    tag = summary_tag(point, settings)
    update = {f"eval/{tag}/{k}": v for k, v in numbers.items()}
    update.update({f"eval/{tag}/settings": settings, f"eval/{tag}/run": eval_id})
    if not point.get("point"):
        update.update({f"eval/{k}": v for k, v in numbers.items()})
    return update


@contextlib.contextmanager
def summary_lock(run_dir: Path) -> Iterator[None]:
    """Held while one eval writes the training run's summary (an exclusive lock on `<run>/eval_summary.lock`,
    shared by every process on this file system that locks it; without file locks, nothing is held)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(run_dir / SUMMARY_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some NFS mounts): the in-use wait still applies
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resume_when_free(wait_s: float = RUN_IN_USE_WAIT_S, **kwargs):
    """`wandb.init(**kwargs)` of a run to resume; while W&B says the run is in use (another eval or the training
    still holds it), try again every few seconds for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _init(**kwargs)
        except Exception as exc:  # wandb raises its own errors (CommError, UsageError)
            if "in use" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(2)


def log_evaluation(out_dir: str | Path, checkpoint: str | Path, settings: dict, table_columns: list[str],
                   table_rows: list[list], metrics: dict, video_columns: list[str], video_rows: list[list],
                   images: dict[str, str | Path] | None = None) -> dict:
    """Log one evaluation (see the module docstring).  `video_rows`: per-video values with the mp4 path in the
    column named "video"; `images`: key -> PNG file, logged as images (e.g. "eval/blinks", the eye-openness traces
    of a synthetic eval).  Returns {"eval_run": id, "training_run": id or None, "artifact": name}."""
    import wandb

    out_dir = Path(out_dir)
    train_dir = run_dir_of_checkpoint(checkpoint)
    train = read_run_record(train_dir) if train_dir else None
    point = read_point(out_dir) or {}
    project = (train or {}).get("project") or DEFAULT_PROJECT
    group = os.environ.get("WANDB_RUN_GROUP") or point.get("group") or (train or {}).get("group")
    name = point.get("point") or (f"eval-{train['name']}" if train and train.get("name") else None)
    numbers = {k: v for k, v in metrics.items() if is_number(v)}
    config = {**settings, "checkpoint": str(checkpoint), "training_run": (train or {}).get("id"),
              **(point.get("values") or {}), **({"seed_repeat": point["seed"]} if "seed" in point else {})}

    (out_dir / "eval_wandb").mkdir(parents=True, exist_ok=True)
    run = _init(dir=str((out_dir / "eval_wandb").resolve()), project=project, group=group, job_type="eval", name=name,
                config=config, reinit="finish_previous")
    artifact = checkpoint_artifact(checkpoint)
    declare_input(run, artifact)
    for key in numbers:
        run.define_metric(f"eval/{key}", summary=wandb_summary(f"eval/{key}"))
    index = video_columns.index("video") if "video" in video_columns else None
    videos = [[wandb.Video(v, format="mp4") if i == index and v else v for i, v in enumerate(row)] for row in video_rows]
    samples = [row[index] for row in videos if index is not None and row[index] is not None]
    run.log({"eval/table": wandb.Table(columns=table_columns, data=table_rows),
             "eval/videos": wandb.Table(columns=video_columns, data=videos),
             **({"eval/samples": samples} if samples else {}),  # the report's media panel
             **{key: wandb.Image(str(path)) for key, path in (images or {}).items()},
             **{f"eval/{k}": v for k, v in numbers.items()}})
    eval_id = run.id
    run.finish()

    if train:  # the training run's summary gets the numbers (a resumed offline run writes a new folder)
        with summary_lock(train_dir):
            resumed = resume_when_free(dir=str(train_dir.resolve()), project=project, id=train["id"], resume="allow",
                                       reinit="finish_previous")
            resumed.summary.update(summary_update(point, settings, numbers, eval_id))
            resumed.finish()
    return {"eval_run": eval_id, "training_run": (train or {}).get("id"), "artifact": artifact.name}
