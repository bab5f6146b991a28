"""One photo -> the face crop and initial state `generate` starts from, made exactly as `data prep` makes
its videos: face mesh (each image on its own), the 68-point box, `track.crop_box` (one frame), the crop
resized to `size`, and pose, blink, face box from `annotate.crop_labels`.

Faces are ordered by the area of their 68-point box, largest first; `face_index` picks one.  A photo with
no face, or with several and no `face_index`, raises PrepFailure saying so."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dawn_train.data.prep.annotate import crop_labels
from dawn_train.data.prep.failures import PrepFailure
from dawn_train.data.prep.landmarks import FaceMesh
from dawn_train.data.prep.mesh68 import box_of, to_68
from dawn_train.data.prep.pose import POSE_UNITS
from dawn_train.data.prep.track import CropBox, crop_box, crop_frame

MAX_FACES = 8


@dataclass
class PhotoCrop:
    """The crop (size, size, 3) uint8, where it came from (`box`, source pixels) and its state in the crop."""

    image: np.ndarray
    box: CropBox
    pose: np.ndarray  # (6,) dawn_train units
    pose_3ddfa: np.ndarray  # (6,)
    blink: np.ndarray  # (2,)
    face_box: np.ndarray  # (4,)
    faces: int

    def state(self) -> dict:
        """The initial state as JSON-ready lists (what generate writes to initial_state.json)."""
        return {"pose": self.pose.tolist(), "blink": self.blink.tolist(), "face_box": self.face_box.tolist(),
                "pose_3ddfa": self.pose_3ddfa.tolist(), "crop_box": self.box.as_list(), "size": len(self.image),
                "faces_found": self.faces, "pose_units": POSE_UNITS}


def prepare_photo(photo: np.ndarray, size: int, face_index: int | None = None, crop_scale: float = 1.8) -> PhotoCrop:
    """(H, W, 3) uint8 RGB photo -> PhotoCrop of one face (module docstring)."""
    with FaceMesh(video=False, max_faces=MAX_FACES) as mesh:
        faces = mesh.faces(photo)
    if not faces:
        raise PrepFailure("no face found in the image")
    boxes = [box_of(to_68(face)[:, :2]) for face in faces]
    order = sorted(range(len(faces)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    if face_index is None and len(faces) > 1:
        raise PrepFailure(f"{len(faces)} faces found in the image; choose one with --face-index (0 = the largest, "
                          f"up to {len(faces) - 1})")
    index = face_index or 0
    if not 0 <= index < len(faces):
        raise PrepFailure(f"--face-index {index}: the image has {len(faces)} face(s) (0 = the largest)")
    points = faces[order[index]][None]  # (1, 478, 3)
    box = crop_box(boxes[order[index]][None], crop_scale)
    labels = crop_labels(points, box, size)
    return PhotoCrop(crop_frame(photo, box, size), box, labels["pose"][0], labels["pose_3ddfa"][0], labels["blink"][0],
                     labels["face_box"][0], len(faces))
