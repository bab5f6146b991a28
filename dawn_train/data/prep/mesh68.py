"""The 68-point landmark scheme (iBUG/dlib, what 3DDFA-V2 and the official DAWN annotations use) read off
MediaPipe's 478-point face mesh.

Each of the 68 points is one mesh vertex at the same anatomical place (0-based 68-point numbering):
    0-16 jaw line from the subject's right ear over the chin (8) to the left ear,
    17-21 / 22-26 right / left eyebrow (outer -> inner / inner -> outer),
    27-30 nose bridge, 31-35 lower nose,
    36-41 / 42-47 right / left eye (corner, two upper-lid points, corner, two lower-lid points),
    48-59 outer lip contour from the right mouth corner, 60-67 inner lip contour.
"Right" is the subject's right, on the image's left for a frontal face.  The jaw points sit on the mesh
silhouette, which for a turned head is where the 68-point annotators put them too only roughly; eyes and
mouth, what dawn_train reads, match well (they are the same anatomical points).
"""
from __future__ import annotations

import numpy as np

MESH_OF_68 = np.array([
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,  # 0-16 jaw
    70, 63, 105, 66, 107,  # 17-21 right brow
    336, 296, 334, 293, 300,  # 22-26 left brow
    168, 197, 5, 4,  # 27-30 nose bridge
    98, 97, 2, 326, 327,  # 31-35 lower nose
    33, 160, 158, 133, 153, 144,  # 36-41 right eye
    362, 385, 387, 263, 373, 380,  # 42-47 left eye
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # 48-59 outer lips
    78, 81, 13, 311, 308, 402, 14, 178,  # 60-67 inner lips
])
EYES = slice(36, 48)  # 12 points: right eye 36-41, left eye 42-47
MOUTH = slice(48, 68)  # 20 points: outer 48-59, inner 60-67 (the official mouth mask reads 48-66)


def to_68(mesh: np.ndarray) -> np.ndarray:
    """Face-mesh points (..., K >= 468, C) -> the 68-point scheme (..., 68, C)."""
    if mesh.shape[-2] < 468:
        raise ValueError(f"expected >= 468 face-mesh points, got {mesh.shape[-2]}")
    return mesh[..., MESH_OF_68, :]


def box_of(points: np.ndarray) -> np.ndarray:
    """Points (..., K, 2+) -> their box (..., 4) = x0, y0, x1, y1 (official face box: the 68 points' extent)."""
    return np.concatenate([points[..., :2].min(axis=-2), points[..., :2].max(axis=-2)], axis=-1)
