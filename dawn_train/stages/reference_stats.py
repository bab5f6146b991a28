"""Running means of the training clips' reference frames: the face box (normalised by the frame size), head pose and
blink.  An A2V-FDM checkpoint records them, and `dawn-train generate` uses them as its defaults when it has no face
detector or pose estimator for a new portrait."""
from __future__ import annotations

import torch

# checkpoint key -> length of the value (x0, y0, x1, y1) / size; pose (6); blink (2)
FIELDS = {"face_box_mean": 4, "ref_pose_mean": 6, "ref_blink_mean": 2}


class ReferenceStats:
    """Sums in float64 over every reference frame seen, across resumes (the count is recorded beside the means)."""

    def __init__(self) -> None:
        self.sums = {key: torch.zeros(size, dtype=torch.float64) for key, size in FIELDS.items()}
        self.count = 0

    def update(self, batch: dict) -> None:
        """batch: frames (B, T, 3, H, W) or (B, ..., H, W), ref_face_box (B, 4) pixels, ref_pose (B, 6), ref_blink
        (B, 2)."""
        height, width = batch["frames"].shape[-2:]
        box = batch["ref_face_box"].detach().double().cpu() / torch.tensor([width, height, width, height])
        self.sums["face_box_mean"] += box.sum(0)
        self.sums["ref_pose_mean"] += batch["ref_pose"].detach().double().cpu().sum(0)
        self.sums["ref_blink_mean"] += batch["ref_blink"].detach().double().cpu().sum(0)
        self.count += box.shape[0]

    def record(self) -> dict:
        """{key: mean as a list, or None before any frame} and `ref_count`, for a checkpoint."""
        means = {k: (v / self.count).tolist() if self.count else None for k, v in self.sums.items()}
        return {"ref_count": self.count, **means}

    def restore(self, record: dict) -> None:
        """Go on from a checkpoint's record: the means keep their true weight (a record without a count or a mean is
        ignored)."""
        count = int(record.get("ref_count") or 0)
        if count and all(record.get(k) for k in FIELDS):
            self.sums = {k: torch.tensor(record[k], dtype=torch.float64) * count for k in FIELDS}
            self.count = count
