"""W&B side of `dawn-train eval`: the eval's own run and its numbers in the training run's summary.

The eval run (job type "eval", offline by default) lives in `<out folder>/eval_wandb` and holds:
    config      the eval settings (window, steps, seed, frames, ...), the checkpoint and, for a sweep point
                (`point.json` beside the output), the point's swept values flat
    eval/<m>    every Table 1 number, with best/last summaries by metric direction
    eval/table  ground truth / generated rows; eval/videos: per-video numbers with the generated video (+ audio);
                eval/samples: the same videos as media
    input       the checkpoint artifact it evaluated (`tracking.wandb_runs`: same artifact as training logged)
Project and group are the training run's (its `wandb_run.json`), `WANDB_RUN_GROUP` and a sweep point's
group winning.  Then the training run is resumed by id (offline: a new offline-run folder of the same run) and
its summary gets `eval/<m>` (the latest eval) and, for a sweep point, `eval/<point>/<m>`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from dawn_train.tracking.directions import is_number, wandb_summary
from dawn_train.tracking.wandb_runs import checkpoint_artifact, declare_input, read_run_record, run_dir_of_checkpoint

POINT_RECORD = "point.json"  # written by `dawn-train sweep` into every eval point's folder
DEFAULT_PROJECT = "dawn_train"


def read_point(folder: str | Path) -> Optional[dict]:
    path = Path(folder) / POINT_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _init(**kwargs):
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(**kwargs)


def log_evaluation(out_dir: str | Path, checkpoint: str | Path, settings: dict, table_columns: list[str],
                   table_rows: list[list], metrics: dict, video_columns: list[str], video_rows: list[list]) -> dict:
    """Log one evaluation (see the module docstring).  `video_rows`: per-video values with the mp4 path in the
    column named "video".  Returns {"eval_run": id, "training_run": id or None, "artifact": name}."""
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
             **{f"eval/{k}": v for k, v in numbers.items()}})
    eval_id = run.id
    run.finish()

    if train:  # the training run's summary gets the numbers (a resumed offline run writes a new folder)
        resumed = _init(dir=str(train_dir.resolve()), project=project, id=train["id"], resume="allow",
                        reinit="finish_previous")
        update = {f"eval/{k}": v for k, v in numbers.items()}
        if point.get("point"):
            update.update({f"eval/{point['point']}/{k}": v for k, v in numbers.items()})
        resumed.summary.update({**update, "eval/settings": settings, "eval/run": eval_id})
        resumed.finish()
    return {"eval_run": eval_id, "training_run": (train or {}).get("id"), "artifact": artifact.name}
