"""The comparison as a W&B Report (`dawn-train report ... --wandb`), built with wandb-workspaces (`pip install
dawn-train[report]`, part of the `dev` extra).

    title, the comparison table and the paper's layout (markdown blocks, best values in bold)
    "Training" panel grid   runset: the group's training runs; one line plot per val/* metric against the
                            step, grouped by the first swept setting the training runs themselves carry
                            (`run.sweep_values`; not an eval-only one such as the sampling window, not the
                            seed), ungrouped when there is none (one line per run)
    "Evaluation" panel grid runset: the group's eval runs (job type "eval"); a parallel-coordinates panel from
                            the swept settings to the eval metrics, a media panel of the generated sample videos

Offline nothing is looked up: runsets carry no entity or project (W&B fills in the report's when it is
saved), and the definition is written as JSON.  `publish` saves it to W&B (online, logged in) and returns its URL.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from dawn_train.tracking.run_records import Row

EVAL_MEDIA_KEY = "eval/samples"  # generated videos (with audio) logged by `dawn-train eval`
TRAIN_MEDIA_KEY = "val/sample"   # the A2V validation sample video


def _workspaces():
    try:
        import wandb_workspaces.expr as we
        import wandb_workspaces.reports.v2 as wr
    except ImportError as exc:
        raise ValueError("report --wandb needs wandb-workspaces: pip install 'dawn-train[report]'") from exc
    return wr, we


def runset_filter(we, group: Optional[str], names: list[str], eval_runs: bool):
    """The group's runs (or, without a group, the named ones), eval runs or training runs."""
    who = we.Metric("Group") == group if group else we.Metric("Name").isin(names)
    kind = we.Metric("JobType") == "eval" if eval_runs else we.Metric("JobType") != "eval"
    return we.And(who, kind)


def training_group_key(rows: list[Row], columns: list[str]) -> Optional[str]:
    """The column the training curves are grouped by: the first that every training run has in its own W&B config
    (its swept training values), except the seed (a group averages the seeds); None when there is none."""
    trained = [row.training_values for row in rows if row.training]
    for column in columns:
        if column != "seed" and trained and all(column in values for values in trained):
            return column
    return None


def build_wandb_report(rows: list[Row], table: dict, tables_markdown: str, *, project: str, entity: str = "",
                       group: Optional[str] = None, title: Optional[str] = None, runset_entity: str = "",
                       runset_project: str = ""):
    """A `wandb_workspaces.reports.v2.Report` of the comparison (`table`: the report's main table, whose columns
    and metrics choose the panels; `tables_markdown`: the tables as the report prints them).  Offline leave
    `runset_entity`/`runset_project` empty (given ones make wandb-workspaces look them up on the server)."""
    wr, we = _workspaces()
    columns = table["columns"]
    names = [row.name for row in rows]
    trainings = sorted({Path(row.training).name for row in rows if row.training})
    val_metrics = sorted({k for row in rows for k in row.history if k.startswith("val/")})
    eval_metrics = [m for m in table["metrics"] if m.startswith("eval/")]
    group_by = training_group_key(rows, columns)

    def runset(name: str, eval_runs: bool):
        return wr.Runset(entity=runset_entity, project=runset_project, name=name,
                         filters=runset_filter(we, group, trainings if not eval_runs else names, eval_runs))

    training_panels = [wr.LinePlot(title=m, x="Step", y=[m], groupby=wr.Config(group_by) if group_by else None)
                       for m in val_metrics]
    training_panels.append(wr.MediaBrowser(title="validation samples", media_keys=[TRAIN_MEDIA_KEY]))
    eval_panels = [wr.ParallelCoordinatesPlot(
        title=f"{', '.join(columns) or 'runs'} -> eval metrics",
        columns=[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(c)) for c in columns]
        + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in eval_metrics]),
        wr.MediaBrowser(title="generated videos (eval)", media_keys=[EVAL_MEDIA_KEY])]
    blocks = [wr.H1(text=title or f"{group or 'dawn_train'}: comparison"),
              wr.MarkdownBlock(text=tables_markdown),
              wr.H2(text="Training"),
              wr.PanelGrid(runsets=[runset("training runs", False)], panels=training_panels),
              wr.H2(text="Evaluation"),
              wr.PanelGrid(runsets=[runset("eval runs", True)], panels=eval_panels)]
    return wr.Report(project=project, entity=entity, title=(title or f"{group or 'dawn_train'}: comparison")[:128],
                     description=f"dawn-train report of {len(rows)} rows", blocks=blocks)


def report_definition(report) -> str:
    """The report as the JSON W&B stores (no network)."""
    return report._to_model().model_dump_json(indent=1)


def describe(report) -> str:
    """What saving `report` creates, in one line per block."""
    lines = [f"W&B report '{report.title}' in project {report.project!r}:"]
    for block in report.blocks:
        kind = type(block).__name__
        if kind == "PanelGrid":
            filters = "; ".join(str(f) for f in block.runsets[0].filters)
            lines.append(f"  panel grid ({filters}): " + ", ".join(f"{type(p).__name__}({getattr(p, 'title', '')})"
                                                                   for p in block.panels))
        else:
            text = getattr(block, "text", "")
            lines.append(f"  {kind}: {str(text).splitlines()[0] if text else ''}")
    return "\n".join(lines)


def is_online() -> bool:
    return os.environ.get("WANDB_MODE", "offline").lower() not in ("offline", "disabled", "dryrun")


def publish(rows: list[Row], table: dict, tables_markdown: str, *, project: str, group: Optional[str]) -> str:
    """Save the report to W&B (needs WANDB_MODE=online and a login); returns its URL."""
    if not is_online():
        raise ValueError("report --publish saves to W&B: set WANDB_MODE=online and log in (wandb login); "
                         "without --publish the report definition is written offline")
    import wandb

    entity = os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    report = build_wandb_report(rows, table, tables_markdown, project=project, entity=entity, group=group,
                                runset_entity=entity, runset_project=project)
    report.save()
    return report.url
