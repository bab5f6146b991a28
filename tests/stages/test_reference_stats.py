"""ReferenceStats: the means of the reference frames' face box (normalised), pose and blink, carried across resumes
with their true weight."""
from __future__ import annotations

import torch

from dawn_train.stages.reference_stats import FIELDS, ReferenceStats


def batch(boxes, poses, blinks, size=(48, 64)) -> dict:
    return {"frames": torch.zeros(len(boxes), 2, 3, *size, dtype=torch.uint8),
            "ref_face_box": torch.tensor(boxes, dtype=torch.float32),
            "ref_pose": torch.tensor(poses, dtype=torch.float32), "ref_blink": torch.tensor(blinks)}


def test_means_are_normalised_by_the_frame_size_and_survive_a_resume():
    first = batch([[0, 0, 32, 24], [16, 12, 64, 48]], [[1.0] * 6, [3.0] * 6], [[0.2, 0.4], [0.4, 0.6]])
    later = batch([[32, 24, 64, 48]], [[8.0] * 6], [[0.6, 0.8]])
    whole = ReferenceStats()
    assert whole.record() == {"ref_count": 0, **{k: None for k in FIELDS}}
    whole.update(first)
    whole.update(later)
    record = whole.record()
    assert record["ref_count"] == 3
    # x / width 64, y / height 48
    torch.testing.assert_close(torch.tensor(record["face_box_mean"], dtype=torch.float64),
                               torch.tensor([48 / 3 / 64, 36 / 3 / 48, 160 / 3 / 64, 120 / 3 / 48], dtype=torch.float64))
    assert record["ref_pose_mean"] == [4.0] * 6
    torch.testing.assert_close(torch.tensor(record["ref_blink_mean"], dtype=torch.float64),
                               torch.tensor([0.4, 0.6], dtype=torch.float64))

    # stopped after the first batch, restored, then the later batch: the same means as in one run
    resumed = ReferenceStats()
    resumed.restore(stats_after(first).record())
    resumed.update(later)
    for key in FIELDS:
        torch.testing.assert_close(torch.tensor(resumed.record()[key]), torch.tensor(record[key]))
    assert resumed.count == 3

    # a record of a run that saw no frame, or without means, changes nothing
    empty = ReferenceStats()
    empty.restore({"ref_count": 5, "face_box_mean": None})
    empty.restore({})
    assert empty.count == 0


def stats_after(first: dict) -> ReferenceStats:
    stats = ReferenceStats()
    stats.update(first)
    return stats
