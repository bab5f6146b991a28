"""CSIM: arcface_torch iresnet layout, input scaling, cosine similarity bookkeeping."""
import pytest
import torch

from dawn_train.metrics.csim import CSIM, arcface_input
from dawn_train.metrics.networks.arcface import LAYERS, IResNet, iresnet100
from dawn_train.metrics.weights import MetricUnavailable
from tests.metrics.conftest import check_reference_layout, save_random_weights

# Written down from insightface recognition/arcface_torch/backbones/iresnet.py, iresnet100 = [3, 13, 30, 3]:
# stem 7 + 49 blocks x 18 + 4 downsamples x 6 + bn2 5 + fc 2 + features 5 = 925 tensors.
REFERENCE_COUNT = 925
REFERENCE_KEYS = {
    "conv1.weight": (64, 3, 3, 3),
    "prelu.weight": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer2.12.prelu.weight": (128,),
    "layer3.0.downsample.1.running_var": (256,),
    "layer3.29.conv2.weight": (256, 256, 3, 3),
    "layer4.2.bn3.running_var": (512,),
    "bn2.weight": (512,),
    "fc.weight": (512, 25088),
    "features.weight": (512,),
}


def test_layout_matches_reference():
    check_reference_layout(iresnet100(), REFERENCE_COUNT, REFERENCE_KEYS)


def test_forward_shape_small_arch():
    with torch.no_grad():
        assert IResNet(LAYERS["r18"]).eval()(torch.rand(2, 3, 112, 112) * 2 - 1).shape == (2, 512)


def test_input_scaling():
    x = arcface_input(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 128, 128))
    assert x.shape == (1, 3, 112, 112)
    # 8-bit levels (0.5 -> 128), then x / 255 -> (x - 0.5) / 0.5 as arcface_torch inference.py
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6, rtol=0)


def test_missing_weights_is_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="backbone.pth"):
        CSIM(tmp_path / "backbone.pth")


def test_csim_same_identity_is_one_and_means_over_videos(tmp_path):
    csim = CSIM(save_random_weights(IResNet(LAYERS["r18"]), tmp_path / "r18.pth"), arch="r18")
    torch.manual_seed(0)
    source = torch.rand(1, 3, 112, 112)
    csim.update(source, source[:, None].expand(1, 2, 3, 112, 112))
    assert float(csim.compute()) == pytest.approx(1.0, abs=1e-5)
    frames = torch.rand(1, 2, 3, 112, 112)
    csim.update(source, frames)
    ref, emb = csim.embed(source), csim.embed(frames[0])
    second = torch.nn.functional.cosine_similarity(emb, ref).mean()
    assert float(csim.compute()) == pytest.approx((1.0 + float(second)) / 2, abs=1e-6)
