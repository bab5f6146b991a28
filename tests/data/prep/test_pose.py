"""Head-pose maths: 3DDFA-V2's Euler convention, the face frame on real mesh points turned by known
rotations, and the 3DDFA unit conversion: that its constants reproduce their calibration photo (a calibration
check), and that on other renderings of the face it moves as 3DDFA's camera model must (geometric consistency).
Neither is an accuracy measurement: no 3DDFA output is compared (dawn_train/data/prep/pose.py)."""
from __future__ import annotations

import numpy as np
import pytest

from dawn_train.data.prep import pose as P
from dawn_train.data.prep.landmarks import FaceMesh
from dawn_train.data.prep.mesh68 import to_68
from tests.conftest import require_module

require_module("mediapipe")


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


def test_3ddfa_conversion_reproduces_its_calibration(photo_mesh):
    """A calibration check, not accuracy: the photo the constants were fitted on gives 3DDFA's mean pose back;
    zooming and moving its mesh points changes nothing 3DDFA sees (it re-crops around the face every frame),
    while angles pass unchanged."""
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


@pytest.mark.parametrize("zoom, turn, shift", [(0.8, 10.0, (40, 130)), (1.0, -20.0, (30, 160)), (1.25, 5.0, (0, 100)),
                                               (0.7, -10.0, (60, 100))])
def test_3ddfa_conversion_follows_the_head_on_other_renderings(zoom, turn, shift):
    """The astronaut photo zoomed, rolled and moved by a known similarity M, and its face detected again: 3DDFA's
    (tx, ty) is where the BFM origin, a point fixed to the head, projects, so it must land where M takes the
    calibration photo's origin (within 1 px of 120; a fixed, unturned offset is off by ~7 px at 20 deg roll), and s,
    the head's scale in 3DDFA's crop, must follow the zoom over the crop's growth (3 %).  Consistency of the
    conversion's geometry on real re-detections, not its accuracy against 3DDFA."""
    import cv2
    from skimage.data import astronaut

    def convert(image: np.ndarray):
        with FaceMesh(video=False) as mesh:
            points = mesh.landmarks(image)
        lmk68 = to_68(points)[None, :, :2]
        ddfa = P.to_3ddfa(P.head_pose(points[None], image.shape[1]), lmk68, image.shape[1])[0].astype(np.float64)
        roi = P.ddfa_roi(lmk68.astype(np.float64))[0]
        return ddfa, roi, roi[:2] + np.array([ddfa[4], P.DDFA_SIZE - ddfa[5]]) / P.DDFA_SIZE * roi[2]  # y down

    photo = astronaut()
    base, base_roi, base_origin = convert(photo)
    move = cv2.getRotationMatrix2D((225.0, 104.0), turn, zoom)  # about her face; turn > 0: counter-clockwise
    move[:, 2] += shift
    ddfa, roi, origin = convert(cv2.warpAffine(photo, move, (512, 512), flags=cv2.INTER_AREA if zoom < 1 else
                                               cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE))
    error = np.abs(origin - move @ [*base_origin, 1.0]) * P.DDFA_SIZE / roi[2]
    assert (error < 1.0).all(), f"BFM origin {error} px (of 120) away from where the head took it"
    assert ddfa[3] == pytest.approx(base[3] * zoom * base_roi[2] / roi[2], rel=0.03)
    assert ddfa[2] - base[2] == pytest.approx(turn, abs=3.0)
