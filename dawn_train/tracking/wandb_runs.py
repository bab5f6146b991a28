"""What ties a run folder to its W&B run and its checkpoints: the run record (`wandb_run.json`), the checkpoint
artifact (logged by training, declared as input by eval: lineage) and the code's git commit.

A checkpoint artifact is named `model-<W&B run id>` for a checkpoint inside a run (`<run>/checkpoints/...`),
`checkpoint-<file name>` otherwise.  Files up to `upload_max_mb` are added (uploaded when the run syncs); larger
files and DeepSpeed checkpoint folders are references (`file://` + checksum, nothing copied): the same function
builds the artifact on both sides, so training's output and eval's input have the same digest."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Optional

RUN_RECORD = "wandb_run.json"  # {"id", "project", "name", "group", "job_type"} of the run folder's W&B run
RUN_ID_FILE = "wandb_run_id"
UPLOAD_MAX_MB = 50.0


def write_run_record(run_dir: str | Path, **record) -> None:
    path = Path(run_dir) / RUN_RECORD
    path.write_text(json.dumps({k: v for k, v in record.items()}, indent=1) + "\n")


def read_run_record(run_dir: str | Path) -> Optional[dict]:
    """The W&B run of a run folder: its record, or only the id for folders written before records existed."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_RECORD).is_file():
        record = json.loads((run_dir / RUN_RECORD).read_text())
        if (run_dir / RUN_ID_FILE).is_file():  # a requeue may have moved to a new id
            record["id"] = (run_dir / RUN_ID_FILE).read_text().strip()
        return record
    if (run_dir / RUN_ID_FILE).is_file():
        return {"id": (run_dir / RUN_ID_FILE).read_text().strip()}
    return None


def run_dir_of_checkpoint(path: str | Path) -> Optional[Path]:
    """`runs/<name>` for a checkpoint `runs/<name>/checkpoints/<file or DeepSpeed folder>` of a run with a W&B
    record; None for a checkpoint elsewhere (a converted or exported file)."""
    path = Path(path).resolve()
    if path.parent.name != "checkpoints":
        return None
    run_dir = path.parent.parent
    return run_dir if read_run_record(run_dir) else None


def artifact_name(path: str | Path) -> str:
    """`model-<run id>` or `checkpoint-<file name>`, in the characters W&B allows in artifact names."""
    run_dir = run_dir_of_checkpoint(path)
    name = f"model-{read_run_record(run_dir)['id']}" if run_dir is not None else f"checkpoint-{Path(path).name}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def checkpoint_artifact(path: str | Path, metadata: Optional[dict] = None, upload_max_mb: float = UPLOAD_MAX_MB):
    """A `wandb.Artifact` (type "model") of a checkpoint file or DeepSpeed folder."""
    import wandb

    path = Path(path).resolve()
    artifact = wandb.Artifact(artifact_name(path), type="model", metadata=metadata or {})
    if path.is_file() and path.stat().st_size <= upload_max_mb * 2**20:
        artifact.add_file(str(path), name=path.name)
    else:
        artifact.add_reference(path.as_uri(), name=path.name)
    return artifact


def declare_input(run, artifact) -> None:
    """Record `artifact` as an input of `run`.  Online this is `run.use_artifact`; wandb refuses that offline, so
    there the run records the same entry `use_artifact` writes for a new artifact (`use_after_commit`), which
    `wandb sync` turns into the lineage edge."""
    if not run.settings._offline:
        run.use_artifact(artifact)
        return
    run._log_artifact(artifact, is_user_created=True, use_after_commit=True)


def git_state(repo: Optional[str | Path] = None) -> dict:
    """{"git_commit", "git_dirty"} of the code (the dawn_train checkout), or None values outside git."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}
