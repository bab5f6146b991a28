"""Shapes, official state-dict layout, SVD, equivariance transform, VGG layout and losses of dawn_train.models.lfg."""
from __future__ import annotations

import pytest
import torch

from dawn_train.models.lfg import (
    BGMotionPredictor,
    ImagePyramid,
    LatentFlowGenerator,
    RandomTransform,
    Vgg19Features,
    lfg_losses,
    make_coordinate_grid,
    pyramid_perceptual_loss,
    symmetric_eig2x2,
)
from dawn_train.models.lfg.pixelwise_flow_predictor import compose_region_affines

GROUPS = ("generator", "region_predictor", "bg_predictor")
# spec section 8: official parameter counts at the release config (K = 10)
OFFICIAL_PARAMS = {"generator": 45_575_391, "region_predictor": 14_146_728, "bg_predictor": 6_282_438}


def tiny_lfg(num_regions: int = 3, num_blocks: int = 5) -> LatentFlowGenerator:
    """Release structure (5-block hourglasses, 2 down blocks, skips) with few channels, for fast CPU tests.
    Frames need H, W >= 4 * 2^num_blocks (the hourglasses run at 1/4 resolution)."""
    small = dict(block_expansion=4, max_features=16, num_blocks=num_blocks)
    return LatentFlowGenerator(
        num_regions=num_regions,
        region_predictor_params=small,
        bg_predictor_params=small,
        generator_params=dict(block_expansion=4, max_features=16, num_bottleneck_blocks=2,
                              pixelwise_flow_predictor_params=small),
    )


# ----------------------------------------------------------------------------------------------------------------------
# official layout


@pytest.fixture(scope="module")
def release_model_meta() -> LatentFlowGenerator:
    with torch.device("meta"):  # shapes only: no 66 M-parameter allocation
        return LatentFlowGenerator()


@pytest.mark.parametrize("name", ["lfg128", "lfg256"])
def test_state_dict_equals_official_manifest(release_model_meta, official_shapes, name):
    manifest = official_shapes[name]
    assert sorted(manifest) == sorted(GROUPS)
    for group in GROUPS:
        ours = {k: tuple(v.shape) for k, v in getattr(release_model_meta, group).state_dict().items()}
        theirs = {k: tuple(v) for k, v in manifest[group].items()}
        assert ours == theirs, (group, sorted(set(ours) ^ set(theirs))[:10])


def test_release_parameter_count(release_model_meta):
    counts = {g: sum(p.numel() for p in getattr(release_model_meta, g).parameters()) for g in GROUPS}
    assert counts == OFFICIAL_PARAMS
    assert sum(counts.values()) == 66_004_557  # the "66.0 M" of the spec


def test_constructor_rejects_unknown_keys():
    with pytest.raises(ValueError, match="nonsense"):
        LatentFlowGenerator(region_predictor_params=dict(nonsense=1))
    with pytest.raises(ValueError, match="num_regions"):  # a top-level key, not a sub-dict one
        LatentFlowGenerator(generator_params=dict(num_regions=3))
    with pytest.raises(ValueError, match="bg_type"):
        BGMotionPredictor(bg_type="rotation")


def test_numbers_given_as_text_are_read_as_numbers_or_refused_by_key():
    """A dict value set on the command line arrives as text: "0.5" is the number, "half" names its key."""
    tiny = dict(block_expansion="8", max_features=16, num_blocks=2)
    model = LatentFlowGenerator(region_predictor_params={**tiny, "scale_factor": "0.5"}, bg_predictor_params=tiny,
                                generator_params=dict(block_expansion=8, max_features=16, num_down_blocks=2,
                                                      num_bottleneck_blocks=1, pixelwise_flow_predictor_params=tiny))
    assert model.region_predictor.scale_factor == 0.5
    with pytest.raises(ValueError, match=r"region_predictor_params.scale_factor: expected float like 0.25, got 'half'"):
        LatentFlowGenerator(region_predictor_params={**tiny, "scale_factor": "half"})
    with pytest.raises(ValueError, match=r"pixelwise_flow_predictor_params.use_covar_heatmap: expected bool"):
        LatentFlowGenerator(generator_params=dict(pixelwise_flow_predictor_params=dict(use_covar_heatmap="1")))


# ----------------------------------------------------------------------------------------------------------------------
# forward shapes


@pytest.mark.parametrize("size", [128, 256])
@torch.no_grad()
def test_forward_and_api_shapes(size):
    torch.manual_seed(0)
    model = tiny_lfg().eval()
    b, t, k, r = 1, 2, 3, size // 4
    source, driving = torch.rand(b, 3, size, size), torch.rand(b, 3, size, size)
    out = model(source, driving)
    assert out["prediction"].shape == out["deformed"].shape == (b, 3, size, size)
    assert out["optical_flow"].shape == (b, r, r, 2)
    assert out["occlusion_map"].shape == (b, 1, r, r)
    assert out["bottle_neck_feat"].shape == (b, 16, r, r)
    assert out["bg_params"].shape == (b, 3, 3)
    rp = out["driving_region_params"]
    assert rp["heatmap"].shape == (b, k, r, r) and rp["shift"].shape == (b, k, 2)
    for key in ("covar", "affine", "u", "d"):
        assert rp[key].shape == (b, k, 2, 2)
    assert 0 <= out["prediction"].min() and out["prediction"].max() <= 1

    video = torch.rand(b, t, 3, size, size)
    flow, occ = model.encode(source, video)
    assert flow.shape == (b, t, r, r, 2) and occ.shape == (b, t, 1, r, r)
    assert model.decode(source, flow, occ).shape == (b, t, 3, size, size)
    assert model.reference_feature(source).shape == (b, 16, r, r)


@torch.no_grad()
def test_time_batching_equals_per_frame():
    torch.manual_seed(0)
    model = tiny_lfg(num_blocks=3).eval()
    source, video = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 3, 64, 64)
    flow, occ = model.encode(source, video, chunk_size=4)
    frames = model.decode(source, flow, occ, chunk_size=5)
    for i in range(video.shape[1]):
        f, o = model.encode(source, video[:, i])
        torch.testing.assert_close(flow[:, i], f, atol=1e-5, rtol=0)
        torch.testing.assert_close(occ[:, i], o, atol=1e-5, rtol=0)
        torch.testing.assert_close(frames[:, i], model.decode(source, f, o), atol=1e-5, rtol=0)


@torch.no_grad()
def test_non_release_variants_run():
    """Regression jacobian (pca_based=False), isotropic heatmaps, no occlusion head, no skips."""
    torch.manual_seed(0)
    small = dict(block_expansion=4, max_features=16, num_blocks=3)
    model = LatentFlowGenerator(
        num_regions=2,
        region_predictor_params=dict(small, pca_based=False),
        bg_predictor_params=dict(small, bg_type="zero"),
        generator_params=dict(block_expansion=4, max_features=16, num_bottleneck_blocks=1, skips=False,
                              pixelwise_flow_predictor_params=dict(small, use_covar_heatmap=False,
                                                                   estimate_occlusion_map=False)),
    ).eval()
    assert model.region_predictor.jacobian is not None and model.generator.pixelwise_flow_predictor.occlusion is None
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    out = model(source, driving)
    # the regression head starts at the identity jacobian, and covar = affine affine^T
    torch.testing.assert_close(out["driving_region_params"]["affine"], torch.eye(2).expand(2, 2, 2, 2))
    assert "occlusion_map" not in out and out["prediction"].shape == (2, 3, 64, 64)
    flow, occ = model.encode(source, driving)
    assert torch.equal(occ, torch.ones(2, 1, 16, 16))  # no occlusion head == an all-ones map
    torch.testing.assert_close(model.decode(source, flow, occ), out["prediction"])


@pytest.mark.parametrize("bg_type,n", [("zero", 0), ("shift", 2), ("affine", 6), ("perspective", 8)])
def test_bg_predictor_starts_at_identity(bg_type, n):
    model = BGMotionPredictor(block_expansion=4, max_features=8, num_blocks=2, bg_type=bg_type)
    out = model(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    torch.testing.assert_close(out, torch.eye(3).expand(2, 3, 3))
    if n:
        assert model.fc.out_features == n


# ----------------------------------------------------------------------------------------------------------------------
# closed-form SVD


def _random_covariances(n: int, seed: int = 0, min_var: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, 2, generator=g) * torch.rand(n, 1, 1, generator=g)
    return a @ a.transpose(-1, -2) + min_var * torch.eye(2)


def test_closed_form_svd_matches_lapack_up_to_sign():
    covar = _random_covariances(4096)
    u, s = symmetric_eig2x2(covar)
    u_ref, s_ref, _ = torch.linalg.svd(covar)
    torch.testing.assert_close(s, s_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(u @ torch.diag_embed(s) @ u.transpose(-1, -2), covar, atol=1e-6, rtol=1e-5)
    # same reflection structure as LAPACK (det -1); the two may differ only by the sign of the whole matrix
    torch.testing.assert_close(torch.det(u), -torch.ones(4096))
    sign = torch.sign((u * u_ref).sum((-1, -2)))[:, None, None]
    well_separated = (s_ref[:, 0] - s_ref[:, 1]) > 1e-3 * s_ref[:, 0]
    torch.testing.assert_close((u * sign)[well_separated], u_ref[well_separated], atol=1e-4, rtol=0)


def test_closed_form_svd_gives_official_composed_affine():
    """With revert_axis_swap the composed per-region affine (all the flow sees) equals the LAPACK one."""
    # region covariances are never singular (a softmax heatmap covers several pixels); the fixture's smallest
    # singular value is 0.17 of the largest
    src = _random_covariances(2048, 1, min_var=1e-2).view(512, 4, 2, 2)
    drv = _random_covariances(2048, 2, min_var=1e-2).view(512, 4, 2, 2)

    def affine(covar, lapack):
        u, s = (torch.linalg.svd(covar)[:2]) if lapack else symmetric_eig2x2(covar)
        return u @ torch.diag_embed(s.sqrt())

    ours = compose_region_affines(affine(src, False), affine(drv, False), True)
    ref = compose_region_affines(affine(src, True), affine(drv, True), True)
    # relative error, as the inverse of a nearly singular driving affine amplifies rounding
    err = (ours - ref).abs().amax((-1, -2)) / ref.abs().amax((-1, -2))
    assert err.median() < 1e-6 and err.quantile(0.99) < 1e-4


def test_closed_form_svd_gradient_is_finite_for_isotropic_covariance():
    covar = torch.tensor([[[0.2, 0.0], [0.0, 0.2]], [[0.3, 0.1], [0.1, 0.2]]], requires_grad=True)
    u, s = symmetric_eig2x2(covar)
    (u @ torch.diag_embed(s.sqrt())).sum().backward()
    assert torch.isfinite(covar.grad).all()


# ----------------------------------------------------------------------------------------------------------------------
# equivariance transform


def test_transform_with_zero_sigmas_is_identity():
    t = RandomTransform.sample(3, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    z = torch.rand(3, 7, 2) * 2 - 1
    torch.testing.assert_close(t.warp_coordinates(z), z)
    torch.testing.assert_close(t.jacobian(z), torch.eye(2).expand(3, 7, 2, 2))
    frame = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(t.transform_frame(frame, align_corners=True), frame)
    # official sampling (align_corners=False on a pixel-centre grid) slightly zooms, but keeps a constant image
    const = torch.full((3, 3, 16, 16), 0.7)
    torch.testing.assert_close(t.transform_frame(const), const)


def test_transform_jacobian_matches_autograd():
    t = RandomTransform.sample(2, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(0))
    z = (torch.rand(2, 6, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    t = RandomTransform(t.theta.double(), t.control_points.double(), t.control_params.double())
    warped = t.warp_coordinates(z)
    rows = [torch.autograd.grad(warped[..., i].sum(), z, retain_graph=True)[0] for i in range(2)]
    torch.testing.assert_close(t.jacobian(z.detach()), torch.stack(rows, dim=-2))


@pytest.mark.parametrize("align_corners", [False, True])
def test_coordinate_transform_consistent_with_frame_warp(align_corners):
    """Warp a 'coordinate image' (each pixel stores its own (x, y)): the warped image at z must read T(z)."""
    h = w = 32
    t = RandomTransform.sample(2, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(1))
    if align_corners:
        coords = make_coordinate_grid(h, w)  # grid_sample(align_corners=True) reads pixel centres at these values
    else:
        # align_corners=False puts -1 / +1 on the outer pixel edges: pixel j's centre is at (2j + 1) / w - 1
        coords = torch.stack(torch.meshgrid((torch.arange(w) * 2 + 1) / w - 1, (torch.arange(h) * 2 + 1) / h - 1,
                                            indexing="xy"), dim=-1)
    image = coords.permute(2, 0, 1).expand(2, 2, h, w)
    warped = t.transform_frame(image, align_corners=align_corners).permute(0, 2, 3, 1)  # (B, h, w, 2)
    expected = t.warp_coordinates(make_coordinate_grid(h, w).reshape(1, -1, 2)).reshape(2, h, w, 2)
    # a bilinear read of a linear image is exact where T(z) stays inside the outermost pixel centres
    inside = (expected.abs() <= coords.abs().max() - 1e-3).all(-1)
    assert inside.float().mean() > 0.7
    torch.testing.assert_close(warped[inside], expected[inside], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# VGG and losses

TORCHVISION_VGG19_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
                           14: (256, 256), 16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512),
                           25: (512, 512), 28: (512, 512)}


def test_vgg_layout_and_pyramid_shapes():
    with torch.device("meta"):
        meta_vgg = Vgg19Features()
    expected = {}
    for i, (out_ch, in_ch) in TORCHVISION_VGG19_CONVS.items():
        expected[f"features.{i}.weight"], expected[f"features.{i}.bias"] = (out_ch, in_ch, 3, 3), (out_ch,)
    assert {k: tuple(v.shape) for k, v in meta_vgg.state_dict().items()} == expected
    assert not any(p.requires_grad for p in meta_vgg.parameters())

    # a full torchvision-style vgg19 state dict (features 0..34 + classifier) loads; the used layers land
    full = {k: torch.randn(v) for k, v in expected.items()}
    full.update({"features.30.weight": torch.zeros(512, 512, 3, 3), "features.30.bias": torch.zeros(512),
                 "classifier.0.weight": torch.zeros(4, 4), "classifier.6.bias": torch.zeros(4)})
    vgg = Vgg19Features()
    vgg.load_torchvision_state_dict(full)
    assert torch.equal(vgg.features[28].weight, full["features.28.weight"])
    with pytest.raises(ValueError, match="unexpected"):
        vgg.load_torchvision_state_dict({**full, "fc.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Missing"):
        vgg.load_torchvision_state_dict({k: v for k, v in full.items() if k != "features.0.bias"})

    feats = vgg(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4),
                                              (1, 512, 2, 2)]
    pyramid = ImagePyramid((1, 0.5), 3)
    assert list(pyramid.state_dict()) == []
    assert [tuple(v.shape) for v in pyramid(torch.rand(1, 3, 32, 32))] == [(1, 3, 32, 32), (1, 3, 16, 16)]
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = pyramid_perceptual_loss(x, torch.rand(1, 3, 32, 32), vgg, pyramid, [10.0] * 5)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(x.grad).all()
    assert pyramid_perceptual_loss(x, x.detach(), vgg, pyramid, [10.0] * 5).item() == 0.0


def test_lfg_losses_backpropagate_to_all_submodules():
    torch.manual_seed(0)
    model = tiny_lfg(num_blocks=3).train()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses, out = lfg_losses(model, source, driving, vgg=None, pyramid=ImagePyramid((1.0,)),
                             generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"equivariance_shift", "equivariance_affine"}
    total = sum(losses.values()) + (out["prediction"] - driving).abs().mean()
    total.backward()
    for group in ("generator", "region_predictor", "bg_predictor"):
        grads = [p.grad for p in getattr(model, group).parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), group
    assert out["transformed_frame"].shape == driving.shape


def test_occlusion_mask_cuts_holes_that_the_decoder_fills():
    """`occlusion_mask` multiplies the occlusion map: where it is 0 the frame is the decoder's own image
    (`decoded`), a mask of ones changes nothing, and the logged occlusion map stays the predicted one."""
    torch.manual_seed(0)
    model = tiny_lfg(num_blocks=3).eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(source, driving)
        ones = model(source, driving, occlusion_mask=torch.ones(2, 1, 4, 4))
        left = torch.ones(2, 1, 4, 4)
        left[..., :2] = 0  # a hole over the left half (occlusion columns 0-7 of 16)
        holed = model(source, driving, occlusion_mask=left)
    assert torch.equal(ones["prediction"], plain["prediction"])
    assert torch.equal(holed["occlusion_map"], plain["occlusion_map"])
    assert plain["occlusion_map"].min() > 0  # so the hole is what makes the difference below
    # the full-resolution blend upsamples the occlusion bilinearly: columns well inside the hole are decoded only
    assert torch.allclose(holed["prediction"][..., :28], holed["decoded"][..., :28])
    assert not torch.allclose(plain["prediction"][..., :28], plain["decoded"][..., :28])
