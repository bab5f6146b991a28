"""The quality results file of `make quality` (experiments/synth/RESULTS.md): the measured table of each eval
beside its baselines, every goal met or not, what limits an unmet goal, and the learning curves.

    write_results(out_dir, evals={"ground-truth pose/blink": eval_json, ...}, curves=report_dir, ...)

An unmet goal is attributed by the PBNet motion row first (PBNet-driven evals: the pose and blinks PBNet sampled,
read from the signals): if PBNet's own motion misses a motion goal, no video driven by it can meet it.  Then by
the LFG ceiling row (the held-out clip re-rendered by the LFG from its own ground-truth motion): if the ceiling
misses the goal too, the LFG is named first.  Not a strict bound for counted events: an A2V-FDM's latents can close
an eye further than the LFG's own encoding does (one run's generated video counted 4 blinks where its ceiling
counted 3), so the text says the ceiling falls short, not that no A2V-FDM can meet the goal.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from dawn_train.data.schema import BLINK_RELATIVE
from dawn_train.files import read_json
from dawn_train.metrics.synthetic.blink_traces import blink_table, plot_blink_traces
from dawn_train.metrics.synthetic.goals import GoalCheck
from dawn_train.metrics.synthetic.suite import ROWS, TABLE

ROW_NAMES = {"generated": "generated", "still frame": "still frame (baseline)",
             "LFG ceiling": "LFG, ground-truth motion (ceiling)",
             "PBNet motion": "PBNet's sampled motion (its signals, not a video)",
             "ground truth": "real frames (probe floor)"}
# the curves people look at first, when the report drew them
KEY_CURVES = ("val_l1.png", "val_mouth_l1.png", "val_synth_PSNR.png", "val_synth_MouthCorr.png", "val_loss.png",
              "train_loss.png")


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def table_markdown(synthetic: dict) -> list[str]:
    lines = ["| | " + " | ".join(TABLE) + " |", "|---" * (len(TABLE) + 1) + "|"]
    for row in ROWS:
        if row in synthetic:
            lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(_cell(synthetic[row].get(m)) for m in TABLE) + " |")
    return lines


def limit_of(check: GoalCheck, synthetic: dict, meets_goal) -> str:
    if check.met is None:
        return "not measurable (no probe reading)"
    if check.met:
        return ""
    sampled = synthetic.get("PBNet motion", {}).get(check.metric)
    if sampled is not None and not meets_goal(sampled):
        return f"PBNet: its own sampled motion scores {_cell(sampled)}, so no video driven by it can meet the goal"
    ceiling = synthetic.get("LFG ceiling", {}).get(check.metric)
    if ceiling is None:
        return "no LFG ceiling measured"
    if not meets_goal(ceiling):
        return f"the LFG: its ceiling is {_cell(ceiling)}, short of the goal too"
    return f"the A2V-FDM: the LFG ceiling ({_cell(ceiling)}) meets the goal"


def goals_markdown(result: dict) -> list[str]:
    from dawn_train.metrics.synthetic.goals import GOALS

    checks = [GoalCheck(**c) for c in result.get("goals") or []]
    if not checks:
        return []
    synthetic = result["synthetic"]
    # by metric and text: one metric has other goals in other sets (Blink/s within 20% or 30%)
    by_key = {(goal.metric, goal.text): goal for goals in GOALS.values() for goal in goals}
    lines = ["| metric | generated | still frame | ground truth | goal | met | limited by |", "|---" * 7 + "|"]
    for c in checks:
        goal = by_key.get((c.metric, c.goal))

        def ceiling_meets(value, goal=goal, c=c):
            return goal is not None and goal.met(value, c.still_frame, c.ground_truth)

        verdict = {True: "yes", False: "**no**", None: "n/a"}[c.met]
        lines.append(f"| {c.metric} | {_cell(c.generated)} | {_cell(c.still_frame)} | {_cell(c.ground_truth)} | "
                     f"{c.goal} | {verdict} | {limit_of(c, synthetic, ceiling_meets)} |")
    return lines


def blinks_markdown(result: dict, figures: Path) -> list[str]:
    """Where an eval's Blink/s figures come from: blinks counted per video and trace, and the traces drawn
    (`figures`/blinks_<pose_blink>.png).  Empty for an eval without per-frame traces (written before they were
    stored)."""
    table = blink_table(result.get("videos", []))
    if not table:
        return []
    name = f"blinks_{re.sub(r'[^A-Za-z0-9]+', '_', result['settings']['pose_blink'])}.png"
    plot_blink_traces(result["videos"], figures / name, title=f"pose/blink from {result['settings']['pose_blink']}")
    return ["Blinks per video: the probe's eye openness (both eyes' mean) of each video, a blink a run of >= 2 frames "
            f"below {BLINK_RELATIVE}x that video's median; the driving signal is the input, not a reading of a video.", ""] + \
        table + ["", f"![{name}](results/{name})", ""]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def probe_line(path: str | Path) -> str:
    """What the probe behind every figure is: its training steps and its held-out accuracy at 64 px, from the report
    `dawn-train data probe` stores in the file."""
    from dawn_train.metrics.synthetic.train import load_probe

    report = load_probe(path).report
    accuracy = report.get("eval", {}).get("64px")
    if not accuracy:
        return f"The probe (`{path}`) holds no accuracy report."
    return (f"The probe (`{path}`, {report.get('steps', '?')} training steps) reads held-out ground-truth frames at "
            f"64 px with mouth R^2 {accuracy['mouth_r2']:.3f}, eyes R^2 {accuracy['eyes_r2']:.3f}, yaw/pitch/roll "
            f"error {accuracy['yaw_mae_deg']:.2f}/{accuracy['pitch_mae_deg']:.2f}/{accuracy['roll_mae_deg']:.2f} deg.")


def write_results(out_dir: str | Path, evals: dict[str, str | Path], curves: str | Path | None = None,
                  minutes: float | None = None, command: str = "make quality", lfg_goal_db: float = 28.0,
                  probe: str | Path | None = None) -> Path:
    """Write `out_dir`/RESULTS.md and copy the curves (PNG) into `out_dir`/results/.  `evals`: title -> eval
    json (`dawn-train eval --probe --goals ...`); probe: the probe file they used (its accuracy is stated).
    Returns the markdown file."""
    out_dir = Path(out_dir)
    figures = out_dir / "results"
    for path in evals.values():  # every input read (and refused) before anything is written
        read_json(path, "eval result (`dawn-train eval --out`)")
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["# Quality results on the synthetic dataset", "",
             f"Written by `{command}` (experiments/synth/quality.sh) on {time.strftime('%Y-%m-%d')}, commit "
             f"{_commit()}, {os.cpu_count()} CPU cores" + (f", {minutes:.0f} minutes in total." if minutes else "."),
             "Held-out identities; the first frame is the source, the clip's own audio drives the mouth. Every figure "
             "stands beside the still frame (the source held for the whole clip) and the LFG ceiling."]
    lines += [probe_line(probe), ""] if probe else [""]
    for title, path in evals.items():
        result = read_json(path, "eval result (`dawn-train eval --out`)")
        synthetic = result.get("synthetic") if isinstance(result, dict) else None
        if not synthetic:
            raise ValueError(f"{path}: no synthetic ground-truth metrics (run eval with --probe)")
        settings = result["settings"]
        lines += [f"## {title}", "",
                  f"{settings['videos']} videos, up to {settings['max_frames']} frames, DDIM {settings['steps']} "
                  f"steps, pose/blink from {settings['pose_blink']} (`{path}`).", ""]
        lines += table_markdown(synthetic) + [""]
        lines += goals_markdown(result) + [""]
        lines += blinks_markdown(result, figures)
        ceiling = synthetic.get("LFG ceiling", {}).get("PSNR")
        if ceiling is not None and title == next(iter(evals)):
            met = "met" if ceiling >= lfg_goal_db else "**not met**"
            lines += [f"LFG reconstruction PSNR on these clips: {ceiling:.2f} dB (goal >= {lfg_goal_db:.0f} dB: {met}).",
                      ""]
    if curves and Path(curves).is_dir():
        pngs = sorted(Path(curves).glob("*.png"))
        for png in pngs:
            shutil.copy(png, figures / png.name)
        shown = [name for name in KEY_CURVES if (figures / name).exists()]
        lines += ["## Learning curves", ""] + [f"![{name}](results/{name})" for name in shown]
        others = [p.name for p in pngs if p.name not in shown]
        if others:
            lines += ["", "More: " + ", ".join(f"[{name}](results/{name})" for name in others)]
    path = out_dir / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n")
    return path
