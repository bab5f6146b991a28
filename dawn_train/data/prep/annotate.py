"""Face-mesh points in source pixels + the crop -> the per-frame labels of a prepared video (or photo).

Everything is measured in the output crop (pixels of the `size` x `size` frames):
    pose       (T, 6)      yaw, pitch, roll (deg), scale, tx, ty (`prep/pose.py`; smoothed over time)
    pose_3ddfa (T, 6)      the same pose in 3DDFA-V2 units (`pose.to_3ddfa`; its error, estimated, not measured, there)
    blink      (T, 2)      eye openness left, right: the official ratio (`prep/landmarks.py`)
    face_box   (T, 4)      x0, y0, x1, y1 of the 68 points (official face box)
    mouth_lmk  (T, 20, 2)  68-point mouth 48-67;  eye_lmk (T, 12, 2): 68-point eyes 36-47
    lmk68      (T, 68, 2)  all 68 points (`prep/mesh68.py`)
"""
from __future__ import annotations

import numpy as np

from dawn_train.data.prep.landmarks import eye_openness_from_mesh
from dawn_train.data.prep.mesh68 import EYES, MOUTH, box_of, to_68
from dawn_train.data.prep.pose import head_pose, to_3ddfa
from dawn_train.data.prep.track import CropBox, smooth


def crop_labels(mesh: np.ndarray, box: CropBox, size: int) -> dict[str, np.ndarray]:
    """mesh (T, 478, 3) in source pixels (MediaPipe depth scaled like x) -> the label arrays above."""
    points = np.asarray(mesh, dtype=np.float32).copy()
    points[..., :2] = box.to_crop(mesh, size)
    points[..., 2] *= size / box.side  # depth scales with the image
    lmk68 = to_68(points)[..., :2]
    pose = smooth(head_pose(points, size))
    return {
        "pose": pose.astype(np.float32), "pose_3ddfa": to_3ddfa(pose, lmk68, size),
        "blink": eye_openness_from_mesh(points), "face_box": box_of(lmk68).astype(np.float32),
        "mouth_lmk": lmk68[:, MOUTH].astype(np.float32), "eye_lmk": lmk68[:, EYES].astype(np.float32),
        "lmk68": lmk68.astype(np.float32),
    }
