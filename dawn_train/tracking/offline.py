"""Read back what offline W&B runs recorded, with wandb's own readers: `wandb leet inspect --json` (wandb >= 0.31)
or, in older releases, `wandb.sdk.internal.datastore`.  Used by reports and tests; nothing here writes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def offline_runs(save_dir: str | Path) -> list[Path]:
    """The offline W&B run folders under `save_dir` (a run directory: `<save_dir>/wandb/offline-run-*`), oldest
    first; a resumed run has one folder per start."""
    return sorted(Path(save_dir).glob("wandb/offline-run-*"))


def read_offline_run(save_dir: str | Path) -> dict:
    """Everything the offline W&B runs of `save_dir` logged, in the order they were written:
    {"history": [row, ...], "summary": {key: value} (later starts update earlier ones), "config": {...},
    "artifacts": [{"name", "type", "digest", "use_after_commit", "entries": [{"path", "ref", "size"}]}],
    "metrics": {key: {"step_metric", "summary"}}, "runs": [{"id", "project", "group", "job_type"}], "media": [paths]}."""
    runs = offline_runs(save_dir)
    if not runs:
        raise FileNotFoundError(f"{save_dir}: no offline W&B run (wandb/offline-run-*)")
    out: dict = {"history": [], "summary": {}, "config": {}, "artifacts": [], "metrics": {}, "runs": [], "media": []}
    for run in runs:
        out["media"] += sorted(str(p) for p in run.glob("files/media/**/*") if p.is_file())
        for record in _records(run):
            _add(out, record)
    return out


def _add(out: dict, record: dict) -> None:
    kind = record.get("type") or next((k for k in record if k not in ("num", "control", "info", "uuid")), None)
    body = record.get(kind) or {}
    if kind == "history":
        out["history"].append(_items(body.get("item")))
    elif kind == "summary":
        out["summary"].update(_items(body.get("update")))
    elif kind == "config":
        out["config"].update(_items(body.get("update")))
    elif kind == "run":
        out["config"].update(_items((body.get("config") or {}).get("update")))
        out["runs"].append({"id": body.get("run_id"), "project": body.get("project"), "group": body.get("run_group"),
                            "job_type": body.get("job_type"), "tags": body.get("tags") or []})
    elif kind == "metric":
        out["metrics"][body.get("name") or body.get("glob_name")] = {"step_metric": body.get("step_metric"),
                                                                     "summary": body.get("summary") or {}}
    elif kind == "artifact":
        entries = (body.get("manifest") or {}).get("contents") or []
        out["artifacts"].append({"name": body.get("name"), "type": body.get("type"), "digest": body.get("digest"),
                                 "use_after_commit": bool(body.get("use_after_commit")),
                                 "aliases": body.get("aliases") or [],
                                 "entries": [{"path": e.get("path"), "ref": e.get("ref"), "size": e.get("size")}
                                             for e in entries]})


def _items(items) -> dict:
    """History/summary/config items as {key: value}: leet prints a mapping, the protobuf reader a list of
    {key or nested_key, value_json}."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return {k: v for k, v in items.items() if k != "_wandb"}
    out = {}
    for item in items:
        key = item.get("key") or "/".join(item.get("nested_key") or [])
        if key != "_wandb":
            out[key] = json.loads(item.get("value_json") or "null")
    return out


def _records(run: Path) -> list[dict]:
    try:
        from google.protobuf.json_format import MessageToDict
        from wandb.proto import wandb_internal_pb2
        from wandb.sdk.internal.datastore import DataStore
    except ImportError:  # wandb >= 0.31: the Go core's reader
        wandb_cli = Path(sys.executable).with_name("wandb")
        text = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(run)], capture_output=True, text=True,
                              check=True, timeout=120).stdout
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    records = []
    for path in sorted(run.glob("run-*.wandb")):
        store = DataStore()
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind:
                records.append({"type": kind, kind: MessageToDict(getattr(record, kind),
                                                                  preserving_proto_field_name=True)})
    return records
