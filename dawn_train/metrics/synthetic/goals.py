"""Quality goals on the synthetic domain, checked against the rows of `SyntheticSuite.compute()`.

Each goal names one metric of the generated row and how it must compare with the still-frame baseline
(the source held for the clip) or the ground truth, so a figure is never judged on its own:

    DEMO    `make demo` (tiny models, minutes of CPU): PSNR above the still frame, mouth follows the audio.
    QUALITY `make quality` (experiments/synth, <= 60 CPU minutes): the recipe's goals for a model driven by
            ground-truth pose and blink with the clip's own audio;
    PBNET   the same model driven by PBNet's pose and blinks (eval --pbnet-pose/--pbnet-blink).
    LFG     an LFG's reconstructions of the clips from their own motion (`dawn-train eval-lfg`).

    check_goals(rows, QUALITY) -> [GoalCheck(...)]; format_goals(checks) -> lines for people.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

Rows = dict[str, dict[str, Optional[float]]]


@dataclass(frozen=True)
class Goal:
    metric: str                                             # a column of the synthetic table
    text: str                                               # the goal as people read it
    met: Callable[[float, Optional[float], Optional[float]], bool]  # (generated, still frame, ground truth)


@dataclass
class GoalCheck:
    metric: str
    goal: str
    generated: Optional[float]
    still_frame: Optional[float]
    ground_truth: Optional[float]
    met: Optional[bool]  # None: not measurable (no probe, no baseline)

    def as_dict(self) -> dict:
        return asdict(self)


def _above_still(margin: float) -> Callable:
    return lambda generated, still, truth: still is not None and generated >= still + margin


def _within(fraction: float) -> Callable:
    return lambda generated, still, truth: truth is not None and abs(generated - truth) <= fraction * truth


DEMO = (
    Goal("PSNR", "above the still frame", _above_still(0.0)),
    Goal("MouthCorr", ">= 0.5 (mouth opening follows the ground truth, offset 0)",
         lambda generated, still, truth: generated >= 0.5),
)
QUALITY = (
    Goal("PSNR", ">= still frame + 4 dB", _above_still(4.0)),
    Goal("MouthCorr", ">= 0.7 at offset 0", lambda generated, still, truth: generated >= 0.7),
    Goal("Blink/s", "within 20% of the ground truth", _within(0.2)),
    Goal("PoseErr", "<= 3 deg", lambda generated, still, truth: generated <= 3.0),
)
PBNET = (  # the same recipe driven by PBNet's sampled pose and blinks: natural motion, judged against the data's
    Goal("Blink/s", "within 30% of the ground truth", _within(0.3)),
    Goal("PoseStd", "within [0.5, 2]x the ground truth",
         lambda generated, still, truth: truth is not None and 0.5 * truth <= generated <= 2 * truth),
)
LFG = (  # `dawn-train eval-lfg`: the LFG's reconstructions (the ceiling of any A2V-FDM driving it) must leave room
    # for the video goals of QUALITY, and reach the LFG's own 28 dB
    Goal("PSNR", ">= 28 dB", lambda generated, still, truth: generated >= 28.0),
    *(goal for goal in QUALITY if goal.metric != "PSNR"),
)
GOALS = {"demo": DEMO, "quality": QUALITY, "pbnet": PBNET, "lfg": LFG}


def check_probe_request(probe: Optional[str], goals: Optional[str]) -> None:
    """An eval's `--probe` and `--goals`, checked before any model loads: goals need the probe, and a probe asked for
    by name must be there (a typo is an error, not a run whose synthetic metrics are all n/a)."""
    if goals and not probe:
        raise ValueError(f"goals '{goals}' are checked on the synthetic ground-truth metrics: give --probe FILE")
    if probe and not Path(probe).is_file():
        raise FileNotFoundError(f"--probe {probe}: no such probe file (make one with `dawn-train data probe --out`)")


def check_goals(rows: Rows, goals: tuple[Goal, ...]) -> list[GoalCheck]:
    """rows: `SyntheticSuite.compute()` (or the `synthetic` entry of an eval result)."""
    checks = []
    for goal in goals:
        values = [rows.get(row, {}).get(goal.metric) for row in ("generated", "still frame", "ground truth")]
        met = None if values[0] is None else bool(goal.met(*values))
        checks.append(GoalCheck(goal.metric, goal.text, *values, met))
    return checks


def format_goals(checks: list[GoalCheck]) -> list[str]:
    def cell(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    verdict = {True: "met", False: "NOT met", None: "n/a"}
    return [f"{c.metric:<10} {cell(c.generated):>8}  (still frame {cell(c.still_frame)}, ground truth "
            f"{cell(c.ground_truth)})  goal {c.goal}: {verdict[c.met]}" for c in checks]
