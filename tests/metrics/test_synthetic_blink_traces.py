"""Blink traces of an eval: blinks counted per video and trace, the figure, and their place in the results file."""
import json

import numpy as np
from PIL import Image

from dawn_train.metrics.synthetic.blink_traces import blink_table, eye_openness, plot_blink_traces, threshold
from dawn_train.metrics.synthetic.results import write_results
from dawn_train.metrics.synthetic.suite import TABLE


def trace(n: int, closed: list[range], open_level: float = 0.32) -> list[float]:
    x = np.full(n, open_level) + np.random.default_rng(n).normal(0, 0.005, n)
    for frames in closed:
        x[list(frames)] = 0.05
    return eye_openness(x)


def videos() -> list[dict]:
    # video a: the real frames blink twice; the ceiling renders the second blink one frame long (not a blink);
    # the generated video renders both.  video b: no traces (an eval without a probe for it)
    return [{"video_key": "a/0", "frames": 60,
             "eyes": {"ground truth": trace(60, [range(10, 13), range(40, 42)]),
                      "LFG ceiling": trace(60, [range(10, 13), range(40, 41)]),
                      "generated": trace(60, [range(10, 12), range(40, 43)]),
                      "driving": trace(60, [range(10, 13), range(40, 42)])}},
            {"video_key": "b/0", "frames": 60}]


def test_blink_table_counts_each_trace_and_skips_videos_without_traces():
    lines = blink_table(videos())
    assert lines[0] == "| video | real frames | LFG ceiling | generated | driving signal (input) |"
    assert lines[2] == "| a/0 | 2 | 1 | 2 | 2 |"  # a one-frame dip is not a blink
    assert lines[-1] == "| **total** | 2 | 1 | 2 | 2 |" and len(lines) == 4
    assert blink_table([{"video_key": "b/0", "frames": 60}]) == []


def test_threshold_is_the_counters_and_openness_is_both_eyes_mean():
    assert threshold([0.3, 0.3, 0.3, 0.0]) == 0.6 * 0.3
    assert eye_openness(np.array([[0.2, 0.4], [0.0, 0.1]])) == [0.3, 0.05]


def test_blink_figure_is_drawn_with_a_panel_per_video_with_traces(tmp_path):
    path = plot_blink_traces(videos(), tmp_path / "figures v1.0" / "blinks.png", title="ground truth")
    width, height = Image.open(path).size
    one = plot_blink_traces(videos()[:1] * 3, tmp_path / "three.png")
    assert height < Image.open(one).size[1] and width == Image.open(one).size[0]  # 1 panel vs 3
    assert plot_blink_traces([{"video_key": "b/0"}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_results_file_shows_the_blinks_behind_blink_rate(tmp_path):
    synthetic = {row: dict.fromkeys(TABLE, 0.5) for row in ("generated", "still frame", "ground truth")}
    result = {"synthetic": synthetic, "videos": videos(),
              "settings": {"videos": 2, "max_frames": 60, "steps": 10, "pose_blink": "ground truth"}}
    (tmp_path / "gt.json").write_text(json.dumps(result))
    text = write_results(tmp_path / "out", {"GT": tmp_path / "gt.json"}).read_text()
    assert "| a/0 | 2 | 1 | 2 | 2 |" in text
    assert "![blinks_ground_truth.png](results/blinks_ground_truth.png)" in text
    assert (tmp_path / "out" / "results" / "blinks_ground_truth.png").exists()
    del result["videos"]  # an eval written before traces were stored: no section, no figure
    (tmp_path / "old.json").write_text(json.dumps(result))
    text = write_results(tmp_path / "old", {"GT": tmp_path / "old.json"}).read_text()
    assert "Blinks per video" not in text and not (tmp_path / "old" / "results" / "blinks_ground_truth.png").exists()


def test_a_large_split_draws_the_videos_whose_counts_differ_first(tmp_path):
    """A test split of hundreds would not fit one figure: at most max_panels panels, the disagreeing videos first."""
    agree = {"video_key": "same", "frames": 60,
             "eyes": {k: trace(60, [range(10, 13)]) for k in ("ground truth", "LFG ceiling", "generated")}}
    differ = videos()[0]
    many = plot_blink_traces([agree] * 5 + [differ], tmp_path / "many.png", max_panels=2)
    two = plot_blink_traces([agree, agree], tmp_path / "two.png")
    assert Image.open(many).size == Image.open(two).size  # 2 panels, not 6
    from dawn_train.metrics.synthetic.blink_traces import counts_differ
    assert counts_differ(differ) and not counts_differ(agree)
