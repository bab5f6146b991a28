"""LSE-C/D: SyncNet layout, MFCC parity with python_speech_features, offset search, score formula."""
import numpy as np
import pytest
import torch

from dawn_train.metrics.networks.syncnet import SyncNet
from dawn_train.metrics.sync import LSE, mfcc_psf, sync_scores, to_syncnet_frames
from dawn_train.metrics.weights import MetricUnavailable
from tests.metrics.conftest import check_reference_layout, save_random_weights

# Written down from joonson/syncnet_python SyncNetModel.py `S`: 12 convs (weight + bias), 4 linears,
# 14 BatchNorms x 5 tensors = 102 (88 without BatchNorm counters, as in syncnet_v2.model).
REFERENCE_COUNT = 102
REFERENCE_KEYS = {
    "netcnnaud.0.weight": (64, 1, 3, 3),
    "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netfcaud.0.weight": (512, 512),
    "netfcaud.1.running_mean": (512,),
    "netfcaud.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netfclip.3.bias": (1024,),
}

# python_speech_features 0.6 `mfcc(sig, 16000)` of the int16 signal below (computed once with the
# released package): rows 0, 5, 12, 23 of its (24, 13) output.
PSF_ROWS = (0, 5, 12, 23)
PSF_VALUES = np.array([
    [20.4608595355, 2.2201990761, -4.8112547692, 13.3749402721, -53.2785772455, -41.9638090887, 0.1194721282,
     -45.9803223806, -7.3628980269, 34.5462184797, -6.8275399661, 19.8272759397, 28.0639742841],
    [20.31638907, 5.6797473496, -10.9642802823, 23.3981433467, -48.3026494385, -39.8913864076, 3.4763642983,
     -42.8354750937, -4.4604893119, 36.5043963058, -5.5469003298, 21.900210706, 27.9963110355],
    [20.1789765975, 5.9908956063, -8.1123745992, 38.4213398225, -41.919953184, -34.446349802, 3.4037547916,
     -41.3038604118, -3.4845175895, 38.8407748416, -4.5245956942, 22.5321278959, 27.2584117626],
    [19.8658523161, -2.3012600863, -14.8543570857, 28.1183713642, -42.6744482581, -33.6410587384, 6.5724148999,
     -38.2908525457, -2.7145822964, 35.6976450291, -5.674978424, 20.0094057268, 25.4238671914],
])


def psf_signal() -> np.ndarray:
    n = np.arange(4000)
    sig = 10000 * np.sin(2 * np.pi * 440 * n / 16000) * np.exp(-n / 3000) + 2000 * np.sin(2 * np.pi * 3100 * n / 16000)
    return np.round(sig).astype(np.int16).astype(np.float64)


def test_layout_matches_reference():
    check_reference_layout(SyncNet(), REFERENCE_COUNT, REFERENCE_KEYS)


def test_forward_shapes():
    net = SyncNet().eval()
    with torch.no_grad():
        assert net.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)


def test_mfcc_matches_python_speech_features():
    got = mfcc_psf(psf_signal())
    assert got.shape == (24, 13)  # 1 + ceil((4000 - 400) / 160)
    np.testing.assert_allclose(got[list(PSF_ROWS)], PSF_VALUES, rtol=1e-8, atol=1e-8)
    assert mfcc_psf(np.zeros(16000)).shape == (99, 13)  # silence: eps instead of log(0)


def test_frames_are_bgr_255_at_224():
    video = torch.zeros(2, 3, 128, 128)
    video[:, 0] = 1.0  # pure red
    out = to_syncnet_frames(video)
    assert out.shape == (2, 3, 224, 224)
    assert torch.all(out[:, 2] == 255) and torch.all(out[:, :2] == 0)


@pytest.mark.parametrize("shift", [-7, 0, 3, 15])
def test_offset_search_finds_known_shift(shift):
    torch.manual_seed(0)
    n, d, vshift = 60, 16, 15
    audio = torch.randn(n + 40, d)
    video = audio[20 + shift: 20 + shift + n]  # video window i matches audio window i + shift
    scores = sync_scores(video, audio[20: 20 + n], vshift=vshift)
    assert int(scores["offset"]) == -shift
    assert scores["mdist"].shape == (2 * vshift + 1,)
    assert float(scores["lse_d"]) < 0.5 * float(scores["mdist"].median())


def test_scores_on_known_distance_matrix():
    # 1-d embeddings: video 0, audio [3, 1, 2], vshift 1 -> padded audio [0, 3, 1, 2, 0];
    # distances per window i and shift j: [[0, 3, 1], [3, 1, 2], [1, 2, 0]] -> mean over i [4/3, 2, 1]
    scores = sync_scores(torch.zeros(3, 1), torch.tensor([[3.0], [1.0], [2.0]]), vshift=1)
    torch.testing.assert_close(scores["mdist"], torch.tensor([4 / 3, 2.0, 1.0]), atol=1e-5, rtol=0)
    assert float(scores["lse_d"]) == pytest.approx(1.0, abs=1e-5)  # min
    assert float(scores["lse_c"]) == pytest.approx(1 / 3, abs=1e-5)  # median - min
    assert int(scores["offset"]) == -1  # vshift - argmin


def test_missing_weights_is_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="syncnet_v2.model"):
        LSE(tmp_path / "syncnet_v2.model")


def test_lse_metric_on_small_video(tmp_path):
    lse = LSE(save_random_weights(SyncNet(), tmp_path / "syncnet_v2.model", drop_counters=True), vshift=2)
    videos, audio = torch.rand(1, 8, 3, 32, 32), torch.randn(1, 8 * 640) * 0.1
    lse.update(videos, audio)  # min(8, 8) - 5 = 3 windows
    out = lse.compute()
    assert set(out) == {"lse_d", "lse_c", "offset"}
    assert all(torch.isfinite(v) for v in out.values()) and float(out["lse_c"]) >= 0
    with pytest.raises(ValueError, match="more than 5 frames"):
        lse.update(videos[:, :5], audio)
