"""FID InceptionV3: reference layout, strict loading, missing weights, FID(X, X) = 0."""
import pytest
import torch

from dawn_train.metrics.fid import FID, FID_WEIGHTS
from dawn_train.metrics.networks.inception import FIDInceptionV3
from dawn_train.metrics.weights import MetricUnavailable, load_weights
from tests.metrics.conftest import check_reference_layout, save_random_weights

# Written down from torchvision's Inception3(num_classes=1008, aux_logits=False) with pytorch-fid's
# FID blocks (mseitzer/pytorch-fid src/pytorch_fid/inception.py): 94 BasicConv2d x (conv weight +
# 5 BatchNorm tensors) + fc weight/bias = 566 tensors.
REFERENCE_COUNT = 566
REFERENCE_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_random_weights(FIDInceptionV3(), tmp_path_factory.mktemp("fid") / FID_WEIGHTS.filename)


def test_layout_matches_reference():
    check_reference_layout(FIDInceptionV3(), REFERENCE_COUNT, REFERENCE_KEYS)


def test_missing_weights_is_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="pt_inception-2015-12-05-6726825d.pth"):
        FID(tmp_path / "nope.pth")
    with pytest.raises(MetricUnavailable, match="metric unavailable: FID"):
        FID(None)


def test_strict_loading_reports_differences(tmp_path, weights):
    state = torch.load(weights)
    state["Mixed_5b.extra.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(1000, 2048)
    del state["Conv2d_1a_3x3.conv.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing: \[Conv2d_1a_3x3.conv.weight\]") as err:
        load_weights(FIDInceptionV3(), tmp_path / "bad.pth", FID_WEIGHTS)
    assert "Mixed_5b.extra.weight" in str(err.value) and "fc.weight: file (1000, 2048)" in str(err.value)


def test_counters_may_be_absent_and_checksum_is_reported(tmp_path):
    path = save_random_weights(FIDInceptionV3(), tmp_path / "old.pth", drop_counters=True)
    report = load_weights(FIDInceptionV3(), path, FID_WEIGHTS)
    assert report.num_tensors == REFERENCE_COUNT - 94 and len(report.filled) == 94
    assert len(report.sha256) == 64 and report.checksum_ok is False  # random file != released file


def test_fid_of_identical_sets_is_zero(weights):
    fid = FID(weights, method="eig")  # sqrtm at 2048 dims is tested in test_frechet (slow)
    torch.manual_seed(0)
    videos = torch.rand(1, 2, 3, 24, 24)  # (B, T, 3, H, W): 2 frames
    feats = fid.extract(videos)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    fid.update(feats, real=True)
    fid.update(feats, real=False)
    with pytest.warns(UserWarning, match="feature dims"):
        value = fid.compute()
    assert value.dtype == torch.float64 and abs(float(value)) < 1e-3
    fid.update(feats + 1.0, real=False)
    with pytest.warns(UserWarning):
        assert float(fid.compute()) > 1.0
