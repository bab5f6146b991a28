"""Head-pose maths: 3DDFA-V2's Euler convention, the face frame on real mesh points turned by known
rotations, and the 3DDFA unit conversion's calibration."""
from __future__ import annotations

import numpy as np
import pytest

from dawn_train.data.prep import pose as P
from dawn_train.data.prep.landmarks import FaceMesh
from dawn_train.data.prep.mesh68 import to_68


@pytest.fixture(scope="module")
def photo_mesh(astronaut_photo) -> np.ndarray:
    with FaceMesh(video=False) as mesh:
        return mesh.landmarks(astronaut_photo)


def test_angles_round_trip_and_follow_3ddfa_signs():
    angles = np.array([[10.0, -20.0, 30.0], [0.0, 0.0, 0.0], [-45.0, 5.0, 80.0], [60.0, 30.0, -10.0]])
    assert np.allclose(P.matrix_to_angles(P.angles_to_matrix(angles)), angles, atol=1e-9)
    # roll: the face's x axis (to the subject's left) tilted up on screen = counter-clockwise = positive
    tilted = P.angles_to_matrix(np.array([0.0, 0.0, 10.0]))
    assert tilted[1, 0] > 0
    # gimbal lock branch as matrix2angle: yaw +-90, roll 0
    assert np.allclose(P.matrix_to_angles(P.angles_to_matrix(np.array([90.0, 0.0, 0.0])))[[0, 2]], [90.0, 0.0])


def test_face_frame_recovers_known_3d_rotations(photo_mesh):
    """The photo's mesh, rotated in 3D about its centre by known yaw/pitch/roll (in the camera frame
    x right, y up, z toward the viewer), gives back the photo's pose composed with that rotation."""
    base = P.face_rotation(photo_mesh)
    flip = np.array([1.0, -1.0, -1.0])  # pixels (y down, MediaPipe z) <-> camera frame
    centre = photo_mesh.mean(0) * flip
    for turn in ([25.0, 0, 0], [0, -15.0, 0], [0, 0, 20.0], [-30.0, 10.0, 5.0]):
        rotation = P.angles_to_matrix(np.array(turn))
        moved = ((photo_mesh * flip - centre) @ rotation.T + centre) * flip
        expected = P.matrix_to_angles(rotation @ base)
        assert np.allclose(P.matrix_to_angles(P.face_rotation(moved)), expected, atol=1e-6)
        assert P.face_size(moved) == pytest.approx(P.face_size(photo_mesh), rel=1e-9)


def test_3ddfa_conversion_is_calibrated_on_a_frontal_face(photo_mesh):
    """The calibration photo gives 3DDFA's mean pose; zooming and moving the face inside the frame changes
    nothing 3DDFA sees (it re-crops around the face every frame), while angles pass unchanged."""
    from skimage.data import astronaut

    with FaceMesh(video=False) as mesh:
        full = mesh.landmarks(astronaut())
    pose = P.head_pose(full[None], 512)
    ddfa = P.to_3ddfa(pose, to_68(full)[None, :, :2], 512)[0]
    assert np.allclose(ddfa[3:], P.DDFA_MEAN, rtol=2e-3)
    assert np.allclose(ddfa[:3], pose[0, :3])
    zoomed = full * [1.5, 1.5, 1.5] + [40.0, -25.0, 0.0]
    again = P.to_3ddfa(P.head_pose(zoomed[None], 512), to_68(zoomed)[None, :, :2], 512)[0]
    assert np.allclose(again, ddfa, rtol=1e-4, atol=1e-3)
