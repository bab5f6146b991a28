"""Head pose from face-mesh landmarks, in dawn_train units, and their conversion to 3DDFA-V2 units.

The rotation is the face's own frame, read off 3D mesh points (x, y in pixels, MediaPipe's depth z):
    x axis  the sum of (left - right) over 14 rigid left/right point pairs (eye corners, temples, cheeks,
            nostrils, forehead sides), so it points to the subject's left;
    y axis  forehead (mesh 10, 151, 9) minus nose base (2, 97, 98, 326, 327), made orthogonal to x (up);
    z axis  x cross y: out of the face, toward the camera for a frontal face.
It is expressed in a right-handed camera frame with x right, y up, z toward the viewer, the frame of
3DDFA-V2's camera matrix (whose image y is `120 - y`), so `R` here and 3DDFA's `R` (P2sRt) mean the same
thing and the Euler angles come from the same `matrix2angle` (official `extract_init_states/utils/pose.py`):
    yaw = asin(R[2, 0])               > 0: the head turned to the subject's right (left cheek toward the camera)
    pitch = atan2(R[2, 1], R[2, 2])   > 0: the face tilted down (chin in, forehead toward the camera)
    roll = atan2(R[1, 0], R[0, 0])    > 0: the head tilted counter-clockwise as the viewer sees the image
in degrees.  Zero pitch means the forehead-to-nose-base line lies in the image plane; 3DDFA's "frontal"
(the BFM mean face's axes) differs from it by a constant that could not be measured here (no 3DDFA run):
expect a few degrees in pitch, less in yaw and roll.  A constant cancels in what the models see (pose
deltas to the reference frame), so it matters only for PBNet's min-max normalisation, where 1 degree is
1/180 of the range.

dawn_train units of the other three (`pose.npy` columns 3-5), in the output crop:
    scale   face size / crop side, face size = twice the RMS 3D distance of the rigid points (above, plus the
            nose and forehead midline) from their centroid (rotation-invariant; about 0.87 x the height of the
            68-point box, brow to chin, of a frontal face);
    tx, ty  the rigid points' centroid in crop pixels (x right, y down).

3DDFA-V2 units (`to_3ddfa`): angles as above; s and (tx, ty) = the translation of its camera matrix in its
120 x 120 crop (y up), i.e. where the BFM origin projects, that crop being re-detected around the face in every
frame.  Its video mode takes the crop from the 68 landmarks (`parse_roi_box_from_landmark`: a square of side
sqrt(2) x the larger side of the landmark box, centred on it), which is what `to_3ddfa` reproduces from our
68-point box.  The BFM origin is a point fixed to the head: its offset from our centroid scales with the face
and turns with it (the in-plane part, `R[:2, :2]`, of the rotation; its depth part is unknown).  The scale and
that offset are calibrated on one photo, scikit-image's astronaut (frontal), so that it gives the 3DDFA mean
pose of the official release (s 4.79e-4, tx 56.5, ty 64.9, its fallback when no face is found).

Error: NOT measured against 3DDFA (3DDFA-V2 cannot run offline here, and no 3DDFA output of any face is at
hand); the figures are estimates.  s: the calibration face's proportions stand for every face's, so expect
about 10 % between faces; tx, ty: about 3 px of 120 near frontal poses, more at large yaw/pitch, where the
unknown depth of the BFM origin (inside the head) behind our centroid (on the face surface) shows.  What the
tests check (tests/data/prep/test_pose.py) is that the constants reproduce their calibration photo (a
calibration check, not accuracy) and that re-detections of other renderings of the face (zoomed, moved,
rolled) move s, tx, ty as 3DDFA's camera model says they must (geometric consistency, not accuracy).
"""
from __future__ import annotations

import numpy as np

# left/right mesh point pairs (subject's left first) that move with the skull, not with the expression
RIGID_PAIRS = np.array([(263, 33), (362, 133), (454, 234), (356, 127), (323, 93), (327, 98), (358, 129), (345, 116),
                        (280, 50), (297, 67), (338, 109), (284, 54), (251, 21), (389, 162)])
FOREHEAD = np.array([10, 151, 9])
NOSE_BASE = np.array([2, 97, 98, 326, 327])
MIDLINE = np.array([10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 2])
RIGID = np.concatenate([RIGID_PAIRS.ravel(), MIDLINE])
POSE_UNITS = ("yaw, pitch, roll in degrees (3DDFA-V2 matrix2angle convention); scale = face size / crop side; "
              "tx, ty = face centre in crop pixels (see dawn_train/data/prep/pose.py)")

# 3DDFA-V2 calibration (see the module docstring): its mean pose, and what a frontal face gives in our units
# relative to the 3DDFA crop (measured once on scikit-image's astronaut; tests/data/prep/test_pose.py checks that
# they reproduce it, which is a calibration check: nothing here was compared with 3DDFA's output)
DDFA_SIZE = 120
DDFA_MEAN = np.array([4.79e-4, 56.5, 64.9])  # s, tx, ty of the official fallback pose
FACE_SIZE_IN_ROI = 0.6117  # our face size / 3DDFA crop side, frontal astronaut
CENTRE_IN_ROI = np.array([0.4994, 0.2820])  # our centroid in the 3DDFA crop, fractions of its side (y down)
CALIBRATION_ANGLES = np.array([0.602, 2.779, -3.356])  # the astronaut's yaw, pitch, roll (degrees)


def face_rotation(points: np.ndarray) -> np.ndarray:
    """Mesh points (..., K >= 468, 3) in pixels (x right, y down, MediaPipe z) -> rotation (..., 3, 3) whose
    columns are the face's x (to its left), y (up) and z (out of the face) axes in the camera frame
    (x right, y up, z toward the viewer)."""
    p = np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0, -1.0])
    x = (p[..., RIGID_PAIRS[:, 0], :] - p[..., RIGID_PAIRS[:, 1], :]).sum(axis=-2)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    up = p[..., FOREHEAD, :].mean(axis=-2) - p[..., NOSE_BASE, :].mean(axis=-2)
    y = up - (up * x).sum(axis=-1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def matrix_to_angles(rotation: np.ndarray) -> np.ndarray:
    """Rotation (..., 3, 3) -> (..., 3) yaw, pitch, roll in degrees, as 3DDFA-V2's matrix2angle (including its
    gimbal-lock branches at |R[2, 0]| > 0.998)."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.arcsin(np.clip(r[..., 2, 0], -1, 1))
    cos = np.cos(yaw)
    pitch = np.arctan2(r[..., 2, 1] / cos, r[..., 2, 2] / cos)
    roll = np.arctan2(r[..., 1, 0] / cos, r[..., 0, 0] / cos)
    up, down = r[..., 2, 0] > 0.998, r[..., 2, 0] < -0.998
    yaw = np.where(up, np.pi / 2, np.where(down, -np.pi / 2, yaw))
    pitch = np.where(up, np.arctan2(-r[..., 0, 1], -r[..., 0, 2]), np.where(down, np.arctan2(r[..., 0, 1], r[..., 0, 2]), pitch))
    roll = np.where(up | down, 0.0, roll)
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def angles_to_matrix(angles: np.ndarray) -> np.ndarray:
    """(..., 3) yaw, pitch, roll in degrees -> rotation (..., 3, 3) with `matrix_to_angles(R) == angles`
    (R = Rz(roll) Ry(-yaw) Rx(pitch), the composition matrix2angle inverts)."""
    yaw, pitch, roll = np.moveaxis(np.radians(np.asarray(angles, dtype=np.float64)), -1, 0)
    c, s = np.cos, np.sin
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([one, zero, zero, zero, c(pitch), -s(pitch), zero, s(pitch), c(pitch)], -1).reshape(*yaw.shape, 3, 3)
    ry = np.stack([c(yaw), zero, -s(yaw), zero, one, zero, s(yaw), zero, c(yaw)], -1).reshape(*yaw.shape, 3, 3)
    rz = np.stack([c(roll), -s(roll), zero, s(roll), c(roll), zero, zero, zero, one], -1).reshape(*yaw.shape, 3, 3)
    return rz @ ry @ rx


def face_size(points: np.ndarray) -> np.ndarray:
    """(..., K, 3) mesh points in pixels -> (...,) twice the RMS 3D distance of the rigid points from their centroid."""
    rigid = np.asarray(points, dtype=np.float64)[..., RIGID, :]
    centred = rigid - rigid.mean(axis=-2, keepdims=True)
    return 2.0 * np.sqrt((centred ** 2).sum(axis=-1).mean(axis=-1))


def face_centre(points: np.ndarray) -> np.ndarray:
    """(..., K, 2+) mesh points in pixels -> (..., 2) centroid of the rigid points."""
    return np.asarray(points, dtype=np.float64)[..., RIGID, :2].mean(axis=-2)


def head_pose(points: np.ndarray, crop_size: int) -> np.ndarray:
    """Mesh points (T, K, 3) in pixels of a square crop of side `crop_size` -> pose (T, 6) float32:
    yaw, pitch, roll (degrees), scale, tx, ty in dawn_train units (module docstring)."""
    angles = matrix_to_angles(face_rotation(points))
    scale = face_size(points) / crop_size
    return np.concatenate([angles, scale[..., None], face_centre(points)], axis=-1).astype(np.float32)


def ddfa_roi(lmk68: np.ndarray) -> np.ndarray:
    """(..., 68, 2) landmarks -> (..., 3) the crop 3DDFA-V2 takes around them in video mode: x0, y0, side."""
    box = np.concatenate([lmk68.min(axis=-2), lmk68.max(axis=-2)], axis=-1)
    centre = (box[..., :2] + box[..., 2:]) / 2
    side = np.sqrt(2.0) * (box[..., 2:] - box[..., :2]).max(axis=-1)
    return np.concatenate([centre - side[..., None] / 2, side[..., None]], axis=-1)


def to_3ddfa(pose: np.ndarray, lmk68: np.ndarray, crop_size: int) -> np.ndarray:
    """dawn_train pose (T, 6) and the 68 landmarks (T, 68, 2), both in crop pixels of side `crop_size`
    -> (T, 6) in 3DDFA-V2 units: yaw, pitch, roll (degrees, unchanged), s, tx, ty (its 120-px crop, y up).
    Accuracy: see the module docstring."""
    pose = np.asarray(pose, dtype=np.float64)
    roi = ddfa_roi(np.asarray(lmk68, dtype=np.float64))
    size_in_roi = pose[..., 3] * crop_size / roi[..., 2]
    centre = (pose[..., 4:6] - roi[..., :2]) / roi[..., 2:3] * [1, -1] + [0, 1]  # in the crop, fractions, y up
    zoom = size_in_roi / FACE_SIZE_IN_ROI
    s = DDFA_MEAN[0] * zoom
    # the BFM origin: our centroid plus the head-fixed offset, turned as the head is turned and scaled with the face
    offset = np.einsum("...ij,j->...i", angles_to_matrix(pose[..., :3])[..., :2, :2], ORIGIN_OFFSET)
    txy = (centre + offset * zoom[..., None]) * DDFA_SIZE
    return np.concatenate([pose[..., :3], s[..., None], txy], axis=-1).astype(np.float32)


def _origin_offset() -> np.ndarray:
    """The BFM origin minus our centroid in the face's own x, y axes (crop fractions at the calibration face
    size, y up): what the calibration photo shows, with its own rotation taken out."""
    seen = DDFA_MEAN[1:] / DDFA_SIZE - (CENTRE_IN_ROI * [1, -1] + [0, 1])
    return np.linalg.solve(angles_to_matrix(CALIBRATION_ANGLES)[:2, :2], seen)


ORIGIN_OFFSET = _origin_offset()
