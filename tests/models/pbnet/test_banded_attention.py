"""PBNet's eval-mode window as banded attention: equal to the official dense (H, T, T) bias, in O(T x window)."""
from __future__ import annotations

import pytest
import torch

from dawn_train.inference.memory import live_tensor_peak, meta_like
from dawn_train.models.pbnet import PBNet, lengths_to_mask
from dawn_train.models.pbnet.attention import BandedBias

A = 8  # audio features of the tiny model
WINDOW = 16  # frames per side: small, so that T >> window stays cheap


def tiny(**kw) -> PBNet:
    torch.manual_seed(0)
    args = dict(audio_dim=A, pose_latent_dim=8, audio_latent_dim=8, ff_size=16, num_layers=2, num_heads=4, dim_head=8,
                max_len=8, eval_window=WINDOW)
    return PBNet(**{**args, **kw}).eval()


def inputs(b: int, t: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 1, 6, generator=g, dtype=torch.float64).to(dtype)
    z = torch.randn(b, t, 8, generator=g, dtype=torch.float64).to(dtype)
    audio = torch.randn(b, t, A, generator=g, dtype=torch.float64).to(dtype)
    return x0, z, audio


def decode(model: PBNet, banded: bool, *args, **kw) -> torch.Tensor:
    model.decoder.banded = banded
    try:
        return model.decode(*args, **kw)
    finally:
        model.decoder.banded = True


# T = 1; within the window; exactly window + 1 (still dense); window + 2 (first banded); not a multiple of the
# block (= WINDOW frames); far beyond the window
LENGTHS = [1, 5, WINDOW + 1, WINDOW + 2, 3 * WINDOW + 5, 20 * WINDOW + 7]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("t", LENGTHS)
@torch.no_grad()
def test_banded_equals_dense_masked_attention(t, dtype, tol):
    model = tiny().to(dtype)
    x0, z, audio = inputs(2, t, dtype, seed=t)
    banded, dense = decode(model, True, x0, z, audio), decode(model, False, x0, z, audio)
    assert banded.dtype == dtype and banded.shape == (2, t, 6)
    assert (banded - dense).abs().max().item() < tol


@torch.no_grad()
def test_banded_path_is_taken_only_beyond_the_window():
    model = tiny()
    for t, expect in ((WINDOW + 1, False), (WINDOW + 2, True)):
        bias = model.decoder._bias(model.decoder.time_rel_pos_bias_tgt, t, None)
        assert isinstance(bias, BandedBias) == expect
    model.train()  # training never applies the window: dense, as the official code
    assert not isinstance(model.decoder._bias(model.decoder.time_rel_pos_bias_tgt, 10 * WINDOW, None), BandedBias)


@torch.no_grad()
def test_the_window_still_bites_when_banded():
    """Frames beyond the (two-layer) receptive field do not change an output, and the result differs from
    attention over everything."""
    model = tiny()
    t = 12 * WINDOW
    x0, z, audio = inputs(1, t)
    out = decode(model, True, x0, z, audio)
    edited = audio.clone()
    edited[:, -WINDOW:] += 3.0
    # 3 attention layers + the query-side init attention reach at most 5 * WINDOW frames back
    assert torch.equal(decode(model, True, x0, z, edited)[:, : t - 6 * WINDOW], out[:, : t - 6 * WINDOW])
    for table in (model.decoder.time_rel_pos_bias_tgt, model.decoder.time_rel_pos_bias_mem):
        table.eval_window = None
    assert (model.decode(x0, z, audio) - out).abs().max() > 1e-4


@torch.no_grad()
def test_padded_keys_fall_back_to_the_dense_bias():
    """mask_padded_keys with padding in the batch uses the dense bias: a padded long sequence still decodes like
    the same sequence alone (which is banded)."""
    model = tiny(mask_padded_keys=True)
    t = 6 * WINDOW
    x0, z, audio = inputs(1, t)
    alone = model.decode(x0, z[:, : t - 10], audio[:, : t - 10])
    padded = model.decode(x0, z, audio, lengths_to_mask(torch.tensor([t - 10]), t))
    assert (padded[:, : t - 10] - alone).abs().max() < 1e-5 and (padded[:, t - 10:] == 0).all()


def test_official_window_at_ten_minutes_needs_megabytes_not_gigabytes():
    """The release-size PBNet (+-200 frames) over 15,000 frames, traced on the meta device (no memory used):
    the banded decoder's live tensors stay below 256 MiB (~7 KiB per frame, linear), the dense one needs > 10 GiB
    for its T x T biases."""
    model = PBNet(audio_dim=1024).eval()
    t = 15000

    def peak(banded: bool) -> int:
        model.decoder.banded = banded
        return live_tensor_peak(model.decoder, "forward", (1, 1, 6), (1, t, 256), (1, t, 1024),
                                meta_like((1, t), torch.bool))

    banded, dense = peak(True), peak(False)
    assert banded < 256 * 2 ** 20 and dense > 10 * 2 ** 30
