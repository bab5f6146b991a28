"""FVD: I3D reference layout and SAME padding, clip splitting, preprocessing, missing weights."""
import math

import pytest
import torch
from torch import nn

from dawn_train.metrics.fvd import FVD, preprocess_clips, split_clips
from dawn_train.metrics.networks.i3d import InceptionI3d, same_pad
from dawn_train.metrics.weights import MetricUnavailable
from tests.metrics.conftest import check_reference_layout, save_random_weights

# Written down from piergiaj/pytorch-i3d pytorch_i3d.py (same names in VideoGPT's copy): 57 Unit3D
# with BatchNorm (3 stem + 9 Mixed x 6) x 6 tensors + logits conv weight and bias = 344 tensors.
REFERENCE_COUNT = 344
REFERENCE_KEYS = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
    "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
    "Mixed_5c.b2b.bn.running_mean": (128,),
    "Mixed_5c.b0.conv3d.weight": (384, 832, 1, 1, 1),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}


class ClipRecorder(nn.Module):
    """Stands in for I3D: records its inputs, returns 400-d features."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.shape)
        return x.mean(dim=(2, 3, 4))[:, :1].repeat(1, 400) + torch.randn(x.shape[0], 400)


def test_layout_matches_reference():
    check_reference_layout(InceptionI3d(), REFERENCE_COUNT, REFERENCE_KEYS)


@pytest.mark.parametrize("size,kernel,stride", [(224, 7, 2), (9, 7, 2), (13, 3, 2), (5, 2, 2), (7, 3, 1)])
def test_same_padding_gives_ceil(size, kernel, stride):
    x = torch.zeros(1, 1, size, size, size)
    y = torch.nn.functional.max_pool3d(same_pad(x, (kernel,) * 3, (stride,) * 3), kernel, stride)
    assert y.shape[2:] == (math.ceil(size / stride),) * 3


def test_i3d_forward_shapes():
    net = InceptionI3d().eval()
    with torch.no_grad():
        assert net.features(torch.rand(1, 3, 9, 32, 32)).shape == (1, 1024, 2, 1, 1)
        assert net(torch.rand(1, 3, 9, 224, 224) * 2 - 1).shape == (1, 400)


def test_split_and_preprocess_clips():
    videos = torch.rand(2, 40, 3, 8, 8)
    clips = split_clips(videos, 16, 16)
    assert clips.shape == (4, 16, 3, 8, 8)
    assert torch.equal(clips[1], videos[0, 16:32]) and torch.equal(clips[2], videos[1, :16])
    assert split_clips(videos, 16, 8).shape == (8, 16, 3, 8, 8)
    with pytest.raises(ValueError):
        split_clips(videos[:, :10], 16, 16)
    out = preprocess_clips(torch.ones(1, 2, 3, 128, 160))  # wide frames: short side -> 224, centre crop
    assert out.shape == (1, 3, 2, 224, 224) and torch.allclose(out, torch.ones_like(out))
    ramp = torch.linspace(0, 1, 128).repeat(128, 1).expand(1, 1, 3, 128, 128)
    out = preprocess_clips(ramp)
    assert out.min() >= -1 and out.max() <= 1 and out[0, 0, 0, 0, 0] < -0.99 and out[0, 0, 0, 0, -1] > 0.99


def test_missing_weights_is_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="i3d_pretrained_400.pt"):
        FVD(tmp_path / "none.pt")
    with pytest.raises(MetricUnavailable, match="i3d_torchscript.pt"):
        FVD(tmp_path / "none.pt", detector="torchscript")
    with pytest.raises(ValueError, match="detector"):
        FVD(tmp_path / "none.pt", detector="tf")


def test_fvd_feeds_preprocessed_clips(tmp_path):
    fvd = FVD(save_random_weights(InceptionI3d(), tmp_path / "i3d.pt"), clip_len=16, method="eig")
    recorder = ClipRecorder()
    fvd._net_holder[0] = recorder
    fvd.update(torch.rand(3, 32, 3, 16, 16), real=True)
    fvd.update(torch.rand(2, 40, 3, 16, 16), real=False)
    assert {s for s in recorder.seen} <= {(4, 3, 16, 224, 224), (2, 3, 16, 224, 224)}
    assert int(fvd.real_n) == 6 and int(fvd.fake_n) == 4
    with pytest.warns(UserWarning, match="feature dims"):
        assert torch.isfinite(fvd.compute())
