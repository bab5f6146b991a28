"""Eye openness over time, per evaluated video: where a Blink/s figure comes from.

Blink/s counts closed runs, `count_blinks`: at least 2 frames below 0.6x the video's own median openness.  A blink
of three frames is counted or not by one frame near the threshold, so two rates alone do not say whether a model
missed a blink or rendered it one frame too short.  `dawn-train eval --probe` stores, per video, the probe's eye
openness (mean of both eyes) of the real frames, the LFG ceiling and the generated frames, and the driving signal;
`plot_blink_traces` draws them with each one's threshold and `blink_table` counts the blinks of each.

The driving signal is the input (the ground truth's labels or what PBNet sampled), never a reading of a video: it is
drawn to show which blinks were asked for, and its count is in its own column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dawn_train.data.schema import BLINK_RELATIVE, FPS
from dawn_train.metrics.blink import count_blinks

# eval json key -> (legend label, colour, line style): read from frames first, the input last
TRACES = {"ground truth": ("real frames", "black", "-"), "LFG ceiling": ("LFG ceiling", "tab:blue", "--"),
          "generated": ("generated", "tab:red", "-"), "driving": ("driving signal (input)", "tab:gray", ":")}


def eye_openness(eyes) -> list[float]:
    """(T, 2) or (T,) eye openness (tensor or array) -> per-frame mean of both eyes, rounded for a json file."""
    x = np.asarray(eyes.detach().cpu() if hasattr(eyes, "detach") else eyes, dtype=np.float64)
    x = x.mean(-1) if x.ndim == 2 else x
    return [round(float(v), 4) for v in x]


def threshold(openness) -> float:
    """The closed-eye threshold `count_blinks` uses for this trace: BLINK_RELATIVE x its median."""
    x = np.asarray(openness, dtype=np.float64)
    return float(BLINK_RELATIVE * np.median(x[np.isfinite(x)]))


def blink_table(videos: list[dict]) -> list[str]:
    """Markdown: blinks counted per video (rows) in each trace (columns), with the totals.  videos: the eval
    json's `videos`, each with `eyes` {trace: [openness per frame]}.  Empty when no video has traces."""
    videos = [v for v in videos if v.get("eyes")]
    if not videos:
        return []
    keys = [k for k in TRACES if any(k in v["eyes"] for v in videos)]
    lines = ["| video | " + " | ".join(TRACES[k][0] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    totals = dict.fromkeys(keys, 0)
    for video in videos:
        cells = []
        for key in keys:
            trace = video["eyes"].get(key)
            count = None if trace is None else count_blinks(np.asarray(trace, dtype=np.float64))
            totals[key] += count or 0
            cells.append("-" if count is None else str(count))
        lines.append(f"| {video['video_key']} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(str(totals[k]) for k in keys) + " |")
    return lines


def counts_differ(video: dict) -> bool:
    """Whether a video's traces read from frames (real, ceiling, generated) count different numbers of blinks."""
    counts = {count_blinks(np.asarray(video["eyes"][k], dtype=np.float64)) for k in TRACES
              if k != "driving" and k in video["eyes"]}
    return len(counts) > 1


def plot_blink_traces(videos: list[dict], path: str | Path, title: str = "", fps: float = FPS,
                      max_panels: int = 8) -> Path | None:
    """One panel per video with traces: each trace's eye openness over time and, dotted in its colour, its
    closed-eye threshold; the frames of each counted blink are marked.  At most `max_panels` videos, those whose
    counts differ first (a test split of hundreds would not fit one figure).  Writes a PNG; None when no video has
    traces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = [v for v in videos if v.get("eyes")]
    if not videos:
        return None
    if len(videos) > max_panels:
        total = len(videos)
        videos = sorted(videos, key=lambda v: not counts_differ(v))[:max_panels]  # stable: split order otherwise
        title = f"{title}{' - ' if title else ''}{max_panels} of {total} videos, those whose counts differ first"
    figure, axes = plt.subplots(len(videos), 1, figsize=(9, 1.7 * len(videos) + 0.7), sharex=True, squeeze=False)
    for axis, video in zip(axes[:, 0], videos):
        for key, (label, colour, style) in TRACES.items():
            trace = video["eyes"].get(key)
            if trace is None:
                continue
            x = np.asarray(trace, dtype=np.float64)
            time = np.arange(len(x)) / fps
            counted = count_blinks(x)
            axis.plot(time, x, color=colour, ls=style, lw=1.1, label=f"{label}: {counted} blink(s)")
            axis.axhline(threshold(x), color=colour, ls=(0, (1, 3)), lw=0.8)
            closed = x < threshold(x)
            axis.plot(time[closed], x[closed], "o", color=colour, ms=2.5)
        axis.set_ylabel("eye openness", fontsize=8)
        axis.set_title(video["video_key"], fontsize=8, loc="left")
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6, loc="lower right", ncol=2)
    axes[0, 0].figure.suptitle(title + (" - " if title else "") + "dots: frames below the threshold (dotted); a blink "
                               "is a run of >= 2", fontsize=8)
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
