"""W&B logger: offline by default, one W&B run per run directory (so resumes and SLURM requeues
continue the same run instead of starting a new one).

The run id is stored in `<save_dir>/wandb_run_id` the first time; later starts with the same
`save_dir` reuse it with `resume="allow"`; `<save_dir>/wandb_run.json` records the id, project and group, so
`dawn-train eval` can write its numbers into this run's summary.  Set `WANDB_MODE=online` (and log in) to stream
to the server, or sync offline runs later with `wandb sync <save_dir>/wandb/offline-run-*`.

Every metric is declared with `define_metric` the first time it is logged: stepped by `trainer/global_step`,
with its best (min or max by `tracking.directions`) and its last value in the summary.  At the end of a
successful fit the run's `last.ckpt` is logged as the artifact `model-<run id>` (`tracking.wandb_runs`).
"""
from __future__ import annotations

import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Mapping, Optional

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from dawn_train.tracking.directions import wandb_summary
from dawn_train.tracking.wandb_runs import UPLOAD_MAX_MB, checkpoint_artifact, write_run_record


class DawnWandbLogger(WandbLogger):
    """WandbLogger with dawn_train defaults.

    Args:
        save_dir: the run directory (e.g. `runs/lfg-demo`); W&B files go to `<save_dir>/wandb`.
        name: display name of the run.
        project: W&B project.
        group: W&B group (a sweep's runs share one, so reports can find them).
        job_type: the stage, e.g. "lfg", "pbnet", "a2v-stage1".
        tags: free tags (a sweep tags each point).
        mode: "offline" (default), "online" or "disabled"; `WANDB_MODE` in the environment wins.
        log_checkpoint: log the run's last checkpoint as an artifact when the fit ends (files above
            `upload_max_mb` and DeepSpeed folders as references: nothing is copied).
    """

    def __init__(self, save_dir: str, name: str | None = None, project: str = "dawn_train", group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None, mode: str = "offline",
                 log_checkpoint: bool = True, upload_max_mb: float = UPLOAD_MAX_MB, **kwargs):
        # absolute: W&B's service process writes the run log relative to its own working directory
        run_dir = Path(save_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb_run_id"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = f"{(name or run_dir.name)[:48]}-{secrets.token_hex(4)}"
            id_file.write_text(run_id + "\n")
        os.environ.setdefault("WANDB_MODE", mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        super().__init__(save_dir=str(run_dir), name=name or run_dir.name, project=project, id=run_id, group=group,
                         job_type=job_type, tags=tags, resume="allow", **kwargs)
        write_run_record(run_dir, id=run_id, project=project, name=name or run_dir.name, group=group, job_type=job_type)
        self._log_checkpoint, self._upload_max_mb = log_checkpoint, upload_max_mb
        self._defined: set[str] = set()
        self._last_checkpoint: Optional[tuple[str, int]] = None

    @property
    def experiment(self):
        """The W&B run.  After a crash (a killed process, an OOM) the dead run's W&B service may
        still hold the run id for a while: wait for it, then continue under a new id rather than
        failing the resumed training (the new id is recorded and said)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return super().experiment
            except Exception as exc:  # wandb raises its own ServerResponseError
                if "is in use" not in str(exc):
                    raise
                if time.monotonic() < deadline:
                    time.sleep(2)
                    continue
                new_id = f"{self._id.rsplit('-', 1)[0]}-{secrets.token_hex(4)}"
                warnings.warn(f"W&B run id {self._id} is still held by a dead process; continuing as run {new_id}")
                (Path(self._save_dir) / "wandb_run_id").write_text(new_id + "\n")
                self._id = self._wandb_init["id"] = new_id

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        new = [key for key in metrics if key not in self._defined]
        for key in new:  # declared before the first value, so the summary keeps the best from the start
            self.experiment.define_metric(key, step_metric="trainer/global_step", summary=wandb_summary(key))
        self._defined.update(new)
        super().log_metrics(metrics, step)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        last = getattr(checkpoint_callback, "last_model_path", "") or getattr(checkpoint_callback, "best_model_path", "")
        if last:
            self._last_checkpoint = (last, int(getattr(checkpoint_callback, "_last_global_step_saved", 0) or 0))
        super().after_save_checkpoint(checkpoint_callback)

    def finalize(self, status: str) -> None:
        """Finish the W&B run when the trainer is done: its records are complete on disk, and a
        later run in the same process (another fit, a test) starts its own W&B run instead of
        silently logging into this one.  A later stage of the same Trainer resumes it by id.
        A successful fit first logs its last checkpoint as the artifact `model-<run id>`."""
        super().finalize(status)
        if status == "success" and self._log_checkpoint and self._last_checkpoint and self._experiment is not None:
            path, step = self._last_checkpoint
            if Path(path).exists():
                artifact = checkpoint_artifact(path, {"global_step": step, "path": str(Path(path).resolve())},
                                               self._upload_max_mb)
                self._experiment.log_artifact(artifact, aliases=["latest", f"step-{step}"])
        if self._experiment is not None:
            import wandb

            if wandb.run is not None and wandb.run.id == self._experiment.id:
                self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


class DawnCSVLogger(CSVLogger):
    """CSVLogger that keeps the rows of earlier starts of the same run (a resume or a SLURM
    requeue) instead of deleting `metrics.csv`; steps between the last checkpoint and the
    interruption appear twice, as they were trained twice."""

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = path.read_text() if path.is_file() else None
        writer = super().experiment  # Lightning's writer deletes an existing metrics.csv here
        if kept:
            path.write_text(kept)
            writer.metrics_keys = sorted(kept.splitlines()[0].split(","))
        return writer
