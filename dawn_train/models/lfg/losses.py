"""LFG training losses as plain functions of tensors (weights are arguments; logging is the caller's job).

Official counterpart: ``LFG/modules/model.py:ReconstructionModel.forward``. Release weights: perceptual [10] * 5 over
scales [1, 0.5, 0.25, 0.125]; equivariance_shift 10; equivariance_affine 10.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..precision import at_least_float32
from .equivariance import RandomTransform
from .region_predictor import symmetric_eig2x2
from .vgg import ImagePyramid, Vgg19Features


def perceptual_loss(features_pred: Sequence[Tensor], features_real: Sequence[Tensor],
                    layer_weights: Sequence[float]) -> Tensor:
    """sum_i w_i * mean |pred_i - real_i| over VGG layers, a scalar; the real features are detached (they are the
    target).  features_pred, features_real: one (B, C_i, H_i, W_i) map per layer, alike in shape."""
    if len(layer_weights) != len(features_pred):
        raise ValueError(f"{len(layer_weights)} layer weights for {len(features_pred)} VGG layers")
    total = at_least_float32(features_pred[0].new_zeros(()))
    for w, p, r in zip(layer_weights, features_pred, features_real):
        if w:  # in float32 when the features are bfloat16 (bf16-mixed): a loss is a reduction, not a matmul
            total = total + w * (at_least_float32(p) - at_least_float32(r.detach())).abs().mean()
    return total


def pyramid_perceptual_loss(prediction: Tensor, target: Tensor, vgg: Vgg19Features, pyramid: ImagePyramid,
                            layer_weights: Sequence[float]) -> Tensor:
    """Perceptual loss summed over the scales of ``pyramid``. prediction, target: (B, 3, H, W) in [0, 1]."""
    pred_pyr = pyramid(prediction)
    with torch.no_grad():  # the target's features are detached anyway: no graph for them
        real_pyr = pyramid(target)
    total = at_least_float32(prediction.new_zeros(()))
    for pred, real in zip(pred_pyr, real_pyr):
        with torch.no_grad():
            real_features = vgg(real)
        total = total + perceptual_loss(vgg(pred), real_features, layer_weights)
    return total


def equivariance_shift_loss(driving_shift: Tensor, transformed_shift: Tensor, transform: RandomTransform) -> Tensor:
    """mean |mu_drv - T(mu_transformed)|. Shifts (B, K, 2), where the transformed ones are predicted on
    ``transform.transform_frame(driving)``."""
    return (driving_shift - transform.warp_coordinates(transformed_shift)).abs().mean()


def equivariance_affine_loss(driving_affine: Tensor, transformed_shift: Tensor, transformed_affine: Tensor,
                             transform: RandomTransform, revert_axis_swap: bool = True) -> Tensor:
    """mean |I - A_drv^-1 (J_T(mu_t) A_t)|, affines (B, K, 2, 2), shifts (B, K, 2).

    With ``revert_axis_swap`` the product is multiplied by the sign of its [0, 0] entry, like the flow predictor does:
    the SVD axes of the two frames are only defined up to sign.
    """
    mapped = torch.matmul(transform.jacobian(transformed_shift), transformed_affine)
    value = torch.matmul(torch.inverse(driving_affine), mapped)
    if revert_axis_swap:
        value = value * torch.sign(value[..., 0:1, 0:1])
    eye = torch.eye(2, device=value.device, dtype=value.dtype)
    return (eye - value).abs().mean()


def lfg_losses(
    model,
    source: Tensor,
    driving: Tensor,
    vgg: Vgg19Features | None,
    pyramid: ImagePyramid,
    *,
    perceptual_weights: Sequence[float] = (10.0,) * 5,
    equivariance_shift_weight: float = 10.0,
    equivariance_affine_weight: float = 10.0,
    sigma_affine: float = 0.05,
    sigma_tps: float | None = 0.005,
    points_tps: int | None = 5,
    generator: torch.Generator | None = None,
    occlusion_mask: Tensor | None = None,
) -> tuple[dict[str, Tensor], dict]:
    """One LFG reconstruction step as in the official ``ReconstructionModel``: returns (weighted losses, model output).

    model: a ``LatentFlowGenerator``; source, driving: (B, 3, H, W) in [0, 1]. Zero weights skip a term (and the
    VGG / extra region-predictor pass it would need). occlusion_mask: see ``LatentFlowGenerator.forward``. The output
    dict gains ``transformed_frame`` and ``transformed_region_params`` when an equivariance term is active.
    """
    out = model(source, driving, occlusion_mask=occlusion_mask)
    losses: dict[str, Tensor] = {}
    if vgg is not None and any(perceptual_weights):
        losses["perceptual"] = pyramid_perceptual_loss(out["prediction"], driving, vgg, pyramid, perceptual_weights)
    if equivariance_shift_weight or equivariance_affine_weight:
        transform = RandomTransform.sample(driving.shape[0], sigma_affine, sigma_tps, points_tps,
                                           device=driving.device, dtype=driving.dtype, generator=generator)
        transformed_frame = transform.transform_frame(driving)
        transformed = model.region_predictor(transformed_frame)
        out.update(transformed_frame=transformed_frame, transformed_region_params=transformed)
        drv = out["driving_region_params"]
        # small 2x2 algebra on coordinates from the float32 region predictor: float32 under bf16-mixed too
        with torch.autocast(driving.device.type, enabled=False):
            if equivariance_shift_weight:
                losses["equivariance_shift"] = equivariance_shift_weight * equivariance_shift_loss(
                    drv["shift"], transformed["shift"], transform)
            if equivariance_affine_weight:
                losses["equivariance_affine"] = equivariance_affine_weight * equivariance_affine_loss(
                    drv["affine"], transformed["shift"], transformed["affine"], transform, model.revert_axis_swap)
    return losses, out


def eye_points_summary(eye_lmk: Tensor) -> tuple[Tensor, Tensor]:
    """Eye landmarks (..., 12, 2) in pixels (68-point 36-47: per eye the outer corner, two upper-lid points, the
    inner corner, two lower-lid points) -> the eyes' centre (..., 2) and their mean lid distance (...,) in pixels."""
    eyes = eye_lmk.unflatten(-2, (2, 6))  # (..., 2 eyes, 6, 2)
    lids = torch.stack(((eyes[..., 1, :] - eyes[..., 5, :]).norm(dim=-1),
                        (eyes[..., 2, :] - eyes[..., 4, :]).norm(dim=-1)), dim=-1)  # (..., 2 eyes, 2 pairs)
    return eye_lmk.mean(dim=-2), lids.flatten(-2).mean(dim=-1)


def pixels_to_region_grid(points: Tensor, heatmap_size: int, scale_factor: float) -> Tensor:
    """Pixel coordinates (..., 2) of the frame (pixel j covers [j, j + 1)) -> the region predictor's heatmap grid
    in [-1, 1] (`make_coordinate_grid`): its pixel i is the blurred frame's pixel i / scale_factor."""
    return 2 * ((points - 0.5) * scale_factor) / (heatmap_size - 1) - 1


def log_lid_ratio(eye_lmk: Tensor, min_lid: float = 0.25) -> Tensor:
    """(B, 2, 12, 2) source and driving eye landmarks in pixels -> (B,) log(lid_driving / lid_source); min_lid
    (pixels) bounds the log of a closed eye's lid distance."""
    _, lid = eye_points_summary(eye_lmk.float())  # (B, 2)
    log_lid = lid.clamp(min=min_lid).log()
    return log_lid[:, 1] - log_lid[:, 0]


def eye_region_loss(source_params: dict, driving_params: dict, eye_lmk: Tensor, region: int,
                    scale_factor: float, min_lid: float = 0.25) -> Tensor:
    """Tie one region to the eyes: its centre on the eyes' centre, and its spread across its main axis changing
    from source to driving frame as the lid distance does, so that a blink changes this region's shape.

    The region predictor is the LFG's only view of the driving frame, and without this nothing makes any region
    follow the eyes: a blink covers a fraction of a percent of the pixels in a few percent of the frames.
    source_params, driving_params: `RegionPredictor` outputs (``shift`` (B, K, 2), ``covar`` (B, K, 2, 2),
    ``heatmap`` (B, K, h, w)); eye_lmk (B, 2, 12, 2): source and driving frames' eye landmarks in pixels; region: the
    region's index; min_lid (pixels) bounds the log of a closed eye's lid distance.
    Returns mean |centre - eyes' centre| (grid units) + mean |log ratio of the spreads - log ratio of the lids|.
    """
    centre, _ = eye_points_summary(eye_lmk.float())  # (B, 2, 2)
    heatmap_size = source_params["heatmap"].shape[-1]
    target = pixels_to_region_grid(centre, heatmap_size, scale_factor)
    with torch.autocast(eye_lmk.device.type, enabled=False):
        shift = torch.stack((source_params["shift"][:, region], driving_params["shift"][:, region]), dim=1).float()
        covar = torch.stack((source_params["covar"][:, region], driving_params["covar"][:, region]), dim=1).float()
        # log of the standard deviation across the main axis (the smaller eigenvalue), (B, 2)
        log_spread = 0.5 * (symmetric_eig2x2(covar)[1][..., 1] + 1e-8).log()
        shape = ((log_spread[:, 1] - log_spread[:, 0]) - log_lid_ratio(eye_lmk, min_lid)).abs().mean()
        return (shift - target).abs().sum(dim=-1).mean() + shape


def eye_occlusion_loss(occlusion: Tensor, eye_lmk: Tensor, eye_boxes: Tensor, min_lid: float = 0.25,
                       power: float = 1.0, margin: float = 0.0) -> Tensor:
    """Make the occlusion map inside the eyes say how much of the driving eye the source cannot show.

    A blink cannot be warped out of an open source eye at the flow's resolution (a 64-px frame's eye is under one
    cell of its 16x16 map), so the decoder must paint it, and it paints where the occlusion map is low.  The target
    is t = exp(-power |log(lid_driving / lid_source)|): 1 when the lids are as in the source, 1/4 when the lid
    distance changed 4x either way (power 1; 1/16 with power 2).  A margin m makes it
    exp(-power max(0, |log ratio| - m)): lids within a factor exp(m) of the source's ask for 1, so the jitter of open
    eyes (median |log ratio| 0.02 between two frames of a synthetic clip, a blink's 1 to 2) leaves the map at 1
    there while a high power darkens it at blinks.  Each pixel of the eye boxes scores the binary KL
    divergence from t to its occlusion p, whose gradient in the occlusion head's logit is p - t: an L1 on p vanished
    with the sigmoid's slope (an LFG's map sits at ~0.99, and an L1 version of this term did not move in 2,800 steps).
    occlusion (B, 1, h, w) in (0, 1); eye_lmk (B, 2, 12, 2) source and driving eye landmarks in pixels; eye_boxes
    (B, h, w): both frames' eye boxes at the occlusion map's resolution.  Returns the mean over pairs of the mean
    over their box pixels (0 when p = t)."""
    change = (log_lid_ratio(eye_lmk, min_lid).abs() - margin).clamp(min=0)
    target = (-power * change).exp()[:, None, None]  # (B, 1, 1)
    p = occlusion[:, 0].float().clamp(1e-6, 1 - 1e-6)
    kl = target * (target / p).log() + (1 - target) * ((1 - target).clamp(min=1e-6) / (1 - p)).log()
    return ((kl * eye_boxes).sum(dim=(1, 2)) / eye_boxes.sum(dim=(1, 2)).clamp(min=1)).mean()
