"""W&B logger: offline by default, one W&B run per run directory (so resumes and SLURM requeues
continue the same run instead of starting a new one).

The run id is stored in `<save_dir>/wandb_run_id` the first time; later starts with the same
`save_dir` reuse it with `resume="allow"`.  Set `WANDB_MODE=online` (and log in) to stream
to the server, or sync offline runs later with `wandb sync <save_dir>/wandb/offline-run-*`.
"""
from __future__ import annotations

import os
import secrets
import time
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger


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
    """

    def __init__(self, save_dir: str, name: str | None = None, project: str = "dawn_train", group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None, mode: str = "offline", **kwargs):
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

    def finalize(self, status: str) -> None:
        """Finish the W&B run when the trainer is done: its records are complete on disk, and a
        later run in the same process (another fit, a test) starts its own W&B run instead of
        silently logging into this one.  A later stage of the same Trainer resumes it by id."""
        super().finalize(status)
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


def read_offline_run(save_dir: str | Path) -> dict:
    """Read back what an offline run logged: {"history": [row, ...], "media": [paths]}.

    Used by tests and reports.  wandb >= 0.31 prints a run's records with `wandb leet inspect
    --json`; older releases ship a Python reader (`wandb.sdk.internal.datastore`)."""
    runs = sorted(Path(save_dir).glob("wandb/offline-run-*"))
    if not runs:
        raise FileNotFoundError(f"{save_dir}: no offline W&B run (wandb/offline-run-*)")
    history, media = [], []
    for run in runs:
        media += sorted(str(p) for p in run.glob("files/media/**/*") if p.is_file())
        history += _history_rows(run)
    return {"history": history, "media": media}


def _history_rows(run: Path) -> list[dict]:
    import json
    import subprocess
    import sys

    try:
        from wandb.proto import wandb_internal_pb2
        from wandb.sdk.internal.datastore import DataStore
    except ImportError:
        wandb_cli = Path(sys.executable).with_name("wandb")
        out = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(run)], capture_output=True, text=True,
                             check=True, timeout=120).stdout
        records = (json.loads(line) for line in out.splitlines() if line.startswith("{"))
        return [r["history"]["item"] for r in records if r.get("type") == "history"]
    rows = []
    for path in run.glob("run-*.wandb"):
        store = DataStore()
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def log_eval_table(save_dir: str | Path, columns: list[str], rows: list[list], summary: dict, config: dict,
                   group: str | None = None) -> Path:
    """Log an evaluation as its own W&B run (job_type "eval", offline by default): the table of
    `rows` under `eval/table` and each `summary` value under `eval/<name>`.  Returns the run dir."""
    import wandb

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(dir=str(save_dir), project="dawn_train", job_type="eval", group=group, config=config)
    run.log({"eval/table": wandb.Table(columns=columns, data=rows),
             **{f"eval/{k}": v for k, v in summary.items() if v is not None}})
    run.finish()
    return save_dir
