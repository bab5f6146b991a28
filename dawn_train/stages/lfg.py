"""Stage 1: train the LFG (latent flow generator) on (source, driving) frame pairs.

Losses as the official `ReconstructionModel`: perceptual pyramid (VGG19 relu1_1..relu5_1 at
scales 1, 0.5, 0.25, 0.125, weight 10 per layer) + equivariance (random affine + TPS; shift
and affine terms, weight 10 each).  VGG19 ImageNet weights come from a local file; without one
the config must choose `perceptual: l1` (multi-scale L1 on the same pyramid) explicitly, and
the run logs that choice.  Adam betas (0.5, 0.999) with cosine decay over optimizer steps.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.cli import OptimizerCallable

from dawn_train.checkpoints import load_model_weights
from dawn_train.data import schema
from dawn_train.log import get_logger
from dawn_train.metrics.synthetic.reconstruction import ReconstructionProbe
from dawn_train.metrics.weights import MetricUnavailable
from dawn_train.models.a2v.conditioning import mouth_mask
from dawn_train.models.lfg import LatentFlowGenerator
from dawn_train.models.lfg.losses import eye_occlusion_loss, eye_region_loss, lfg_losses
from dawn_train.models.lfg.vgg import ImagePyramid, Vgg19Features
from dawn_train.stages.augment import PairAugment
from dawn_train.stages.common import DawnStage, save_hyperparameters
from dawn_train.stages.optim import cosine_schedule, fused_on_cpu
from dawn_train.tracking.media import flow_to_rgb, image_grid, log_images

log = get_logger(__name__)


def weighted_l1(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean absolute error under a per-pixel weight: prediction, target (B, C, H, W), weight (B, 1, H, W) >= 0 (a 0/1
    region mask gives the mean over its pixels); 0 when the weight is 0 everywhere."""
    error = (prediction - target).abs() * weight
    return error.sum() / (weight.sum() * prediction.shape[1]).clamp(min=1e-6)


class LFGStage(DawnStage):
    """Args:
        model: the LatentFlowGenerator to train (class_path/init_args in YAML).
        lr, min_lr: peak learning rate and its cosine decay to `min_lr` over the run's optimizer steps.
        optimizer: builds the optimizer as `optimizer(params, lr=lr)` (YAML `class_path`/`init_args`, e.g.
            torch.optim.AdamW with its weight_decay); None = the official Adam, betas (0.5, 0.999).
        perceptual: "vgg19" (official; needs `vgg19_weights`) or "l1" (multi-scale L1 fallback).
        vgg19_weights: path to torchvision's `vgg19` ImageNet state dict (e.g. vgg19-dcbb9e9d.pth).
        perceptual_weights: weight per VGG layer; scales: pyramid scales.
        equivariance_shift_weight, equivariance_affine_weight, sigma_affine, sigma_tps, points_tps: equivariance loss.
        flip_prob, jitter: pair augmentation (time/horizontal flip, colour jitter shared by the pair).
        init_from: weights to start from (official LFG .pth, a converted file or a .ckpt); not a resume.
        image_every_n_steps: log an image grid every N training steps (rank zero).
        mouth_weight: weight of an extra L1 term inside the mouth (the union of both frames' mouth-landmark
            boxes, 1 px margin), mean over those pixels; 0 = off (official).  The mouth covers ~1% of a crop, so
            under frame-mean losses a small LFG learns head motion first and the opening last: the demo LFG
            trained 800 L1 steps reconstructed every frame with a closed mouth (mouth-opening correlation of its
            ground-truth-flow reconstructions -0.14), which no A2V-FDM can then make talk.
        change_weight: weight of an extra L1 term weighted per pixel by how much the driving frame differs from the
            source (|driving - source|, channel mean), normalised by that weight's sum; 0 = off (official).  It needs no
            landmarks: it puts the loss where the source frame does not already explain the driving one (moved
            eyes, nose and mouth when the head turns; on the synthetic data the quality LFG's head-pose error of
            its reconstructions fell from 3.6 to 2.7 deg with it).  It did not teach that LFG to close an eye.
        eye_weight: as `mouth_weight`, inside the union of both frames' boxes around each eye (the shards'
            optional `eye_lmk.npy`: `data synth` and real-data prep write it; pairs without it get no eye term).
        occlusion_dropout: probability that a cell of an `occlusion_dropout_grid` x `occlusion_dropout_grid` grid over
            the frame gets occlusion 0 in a training pair (a hole the decoder must paint from the features around
            it); 0 = off (official).  An LFG trained for minutes leaves its occlusion map near 1 everywhere (warping
            the source explains most pixels), so its decoder never learns to paint and an opening mouth, whose
            inside is not in a closed-mouth source, is drawn closed.  With holes of a mouth's size (grid 4 at 64 px)
            and `decoded_weight` 10, the demo LFG's held-out reconstructions followed the mouth with correlation
            0.78 instead of 0.47 (synthetic data, 1200 steps; 8-px holes, grid 8: 0.30), though its occlusion map
            still stayed above 0.95: the gain shows as lips stretched further apart, not yet as a painted open mouth.
        decoded_weight: weight of an L1 term on the decoder's own image (`decoded`, before its blend with the warped
            source through the occlusion map); 0 = off (official).  It trains the decoder that fills occluded pixels.
        eye_region_weight: weight of a term that ties region `eye_region` to the eyes (`eye_region_loss`: its
            centre on the eyes' centre, its spread across its main axis changing from source to driving frame as the
            lid distance of the `eye_lmk` landmarks does); 0 = off (official).  The region predictor is the LFG's only
            view of the driving frame, and no region follows the eyes on its own: a blink is a fraction of a percent
            of the pixels in a few percent of the frames.  Pairs without eye landmarks get no such term.
        eye_region: index of that region (regions are interchangeable at initialisation).
        eye_occlusion_weight: weight of a term on the occlusion map inside both frames' eye boxes: it should be
            exp(-|log(lid ratio)|) there (binary KL per pixel), low where the driving eye is closed and the source's
            open (`eye_occlusion_loss`), so that the decoder paints the blink warping cannot draw; 0 = off (official).
        eye_occlusion_power: that target raised to this power (exp(-power |log(lid ratio)|)): above 1 the map is
            asked for less of the warped open eye at a blink, leaving more of it to the decoder.
        eye_occlusion_margin: lid ratios within a factor exp(margin) of 1 ask for an occlusion of 1 (the target is
            exp(-power max(0, |log(lid ratio)| - margin))): without it a high power also darkens the map at open eyes,
            whose lids vary a little from frame to frame, and the decoder paints eyes that warping would draw.
        probe: synthetic-probe file (`dawn-train data probe`): on synthetic data, validation also reads mouth, eyes and
            head pose off the reconstructions and logs how well they follow the driving frames (`val/synth/...`,
            `metrics/synthetic/reconstruction.py`): what the LFG's latent motion holds for A2V-FDM to generate.
    """

    def __init__(self, model: LatentFlowGenerator, lr: float = 4e-4, optimizer: OptimizerCallable | None = None,
                 min_lr: float = 2e-6, perceptual: Literal["vgg19", "l1"] = "vgg19", vgg19_weights: str | None = None,
                 perceptual_weights: tuple[float, ...] = (10.0, 10.0, 10.0, 10.0, 10.0),
                 scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125), equivariance_shift_weight: float = 10.0,
                 equivariance_affine_weight: float = 10.0, sigma_affine: float = 0.05, sigma_tps: float = 0.005,
                 points_tps: int = 5, flip_prob: float = 0.5, jitter: float = 0.1, init_from: str | None = None,
                 image_every_n_steps: int = 500, mouth_weight: float = 0.0, change_weight: float = 0.0,
                 eye_weight: float = 0.0, occlusion_dropout: float = 0.0, occlusion_dropout_grid: int = 4,
                 decoded_weight: float = 0.0, eye_region_weight: float = 0.0, eye_region: int = 0,
                 eye_occlusion_weight: float = 0.0, eye_occlusion_power: float = 1.0, eye_occlusion_margin: float = 0.0,
                 probe: str | None = None):
        super().__init__()
        save_hyperparameters(self)
        self.optimizer = optimizer
        self.model = model
        if not 0 <= occlusion_dropout < 1 or occlusion_dropout_grid < 1:
            raise ValueError(f"LFGStage: occlusion_dropout must be in [0, 1) and occlusion_dropout_grid >= 1, got "
                             f"{occlusion_dropout} and {occlusion_dropout_grid}")
        if eye_region_weight and not (0 <= eye_region < model.num_regions and model.region_predictor.pca_based):
            raise ValueError(f"LFGStage: eye_region_weight needs 0 <= eye_region < num_regions ({model.num_regions}) "
                             f"and a pca_based region predictor; got eye_region={eye_region}, pca_based="
                             f"{model.region_predictor.pca_based}")
        flow_predictor = model.generator.pixelwise_flow_predictor
        if eye_occlusion_weight and (flow_predictor is None or flow_predictor.occlusion is None):
            raise ValueError("LFGStage: eye_occlusion_weight needs an LFG that predicts an occlusion map "
                             "(pixelwise_flow_predictor_params.estimate_occlusion_map: true); this one has none")
        if eye_occlusion_power <= 0 or eye_occlusion_margin < 0:
            raise ValueError(f"LFGStage: eye_occlusion_power must be > 0 and eye_occlusion_margin >= 0, got "
                             f"{eye_occlusion_power} and {eye_occlusion_margin}")
        if occlusion_dropout and (flow_predictor is None or flow_predictor.occlusion is None):
            raise ValueError("LFGStage: occlusion_dropout needs an LFG that predicts an occlusion map "
                             "(pixelwise_flow_predictor_params.estimate_occlusion_map: true); this one has none")
        if init_from:
            load_model_weights(self.model, init_from, kind="lfg")
        self.pyramid = ImagePyramid(scales)
        self.vgg = None
        if perceptual == "vgg19":
            if not vgg19_weights:
                raise ValueError("LFGStage: perceptual='vgg19' needs vgg19_weights (a local torchvision vgg19 state dict, "
                                 "e.g. vgg19-dcbb9e9d.pth); set perceptual: l1 to train with the multi-scale L1 fallback")
            if not Path(vgg19_weights).is_file():
                raise FileNotFoundError(
                    f"LFGStage: no VGG19 weights at {vgg19_weights} (vgg19_weights; model.init_args.vgg19_weights in a "
                    f"fit config): download torchvision's https://download.pytorch.org/models/vgg19-dcbb9e9d.pth there, "
                    f"or set --model.init_args.perceptual=l1 to train with the multi-scale L1 fallback")
            self.vgg = Vgg19Features()
            self.vgg.load_torchvision_state_dict(torch.load(vgg19_weights, map_location="cpu", weights_only=True))
            self.vgg.eval()
        elif perceptual != "l1":
            raise ValueError(f"LFGStage: perceptual must be 'vgg19' or 'l1', got {perceptual!r}")
        self.augment = PairAugment(flip_prob=flip_prob, jitter=jitter)
        self.reconstruction_probe = None
        if probe:
            try:
                self.reconstruction_probe = ReconstructionProbe(probe)
            except MetricUnavailable as exc:  # as A2VStage: the run trains, the probe metrics are said to be missing
                log.warning("val/synth metrics unavailable: %s", exc)

    def on_fit_start(self) -> None:
        # Say which reconstruction loss this run uses, in the logs and in the W&B config.
        choice = "vgg19 perceptual pyramid" if self.vgg is not None else "multi-scale L1 (no VGG weights)"
        for logger in self.loggers:
            logger.log_hyperparams({"reconstruction_loss": choice})
        if self.trainer.is_global_zero:
            log.info("reconstruction loss: %s", choice)

    def occlusion_holes(self, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """(B, 1, grid, grid) keep-mask, 0 in each cell with probability `occlusion_dropout`; None when off."""
        hp = self.hparams
        if not hp.occlusion_dropout:
            return None
        grid = hp.occlusion_dropout_grid
        return (torch.rand(batch_size, 1, grid, grid, device=device) >= hp.occlusion_dropout).float()

    def losses(self, source: torch.Tensor, driving: torch.Tensor, regions: dict[str, torch.Tensor] | None = None,
               occlusion_mask: torch.Tensor | None = None, eye_lmk: torch.Tensor | None = None) -> tuple[dict, dict]:
        """source, driving (B, 3, H, W) in [0, 1]; regions: "mouth" and/or "eyes" -> (B, 1, H, W) masks (`regions`),
        each adding its `<name>_l1` term; occlusion_mask: holes cut in the occlusion map (`occlusion_holes`);
        eye_lmk (B, 2, 12, 2): the pair's eye landmarks (`eye_points`), adding the `eye_region` and `eye_occlusion`
        terms whose weights are on."""
        hp = self.hparams
        losses, out = lfg_losses(
            self.model, source, driving, self.vgg, self.pyramid, perceptual_weights=hp.perceptual_weights,
            equivariance_shift_weight=hp.equivariance_shift_weight, equivariance_affine_weight=hp.equivariance_affine_weight,
            sigma_affine=hp.sigma_affine, sigma_tps=hp.sigma_tps, points_tps=hp.points_tps, occlusion_mask=occlusion_mask)
        if self.vgg is None:
            pred, real = self.pyramid(out["prediction"]), self.pyramid(driving)
            losses["l1_pyramid"] = sum(10.0 * (p - r).abs().mean() for p, r in zip(pred, real))
        for name, region in (regions or {}).items():
            losses[f"{name}_l1"] = self.region_weights[name] * weighted_l1(out["prediction"], driving, region)
        if hp.decoded_weight:
            losses["decoded_l1"] = hp.decoded_weight * (out["decoded"] - driving).abs().mean()
        if eye_lmk is not None:
            weights = {"eye_region": hp.eye_region_weight, "eye_occlusion": hp.eye_occlusion_weight}
            losses.update({k: weights[k] * v for k, v in self.eye_terms(out, eye_lmk, source.shape[-1]).items()})
        if hp.change_weight:
            change = (driving - source).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
            losses["change_l1"] = hp.change_weight * weighted_l1(out["prediction"], driving, change)
        return losses, out

    @property
    def region_weights(self) -> dict[str, float]:
        return {"mouth": self.hparams.mouth_weight, "eyes": self.hparams.eye_weight}

    def regions(self, batch: dict, height: int, width: int) -> dict[str, torch.Tensor]:
        """name -> (B, 1, H, W): for each region with a weight whose landmarks the batch holds, the union of the
        source's and the driving frame's landmark boxes (the A2V mouth box, at frame resolution; square frames), one
        box per eye (`schema.EYE_POINTS` landmarks each)."""
        regions = {}
        for name, key, points in (("mouth", "mouth_lmk", None), ("eyes", "eye_lmk", schema.EYE_POINTS)):
            if not self.region_weights[name] or f"driving_{key}" not in batch:
                continue
            lmk = torch.stack((batch[f"source_{key}"], batch[f"driving_{key}"]), dim=1)  # (B, 2, K, 2)
            if points:  # (B, 2 * K / points, points, 2): one box per eye
                lmk = lmk.reshape(len(lmk), -1, points, 2)
            regions[name] = mouth_mask(lmk, height, width, height).amax(dim=1, keepdim=True)
        return regions

    def eye_terms(self, out: dict, eye_lmk: torch.Tensor, frame_size: int) -> dict[str, torch.Tensor]:
        """The eye terms whose weights are on, unweighted: "eye_region", "eye_occlusion".  out: the LFG's output for
        the pair; eye_lmk (B, 2, 12, 2); frame_size: the square frames' side in pixels."""
        hp, terms = self.hparams, {}
        if hp.eye_region_weight:
            terms["eye_region"] = eye_region_loss(out["source_region_params"], out["driving_region_params"], eye_lmk,
                                                  hp.eye_region, self.model.region_predictor.scale_factor)
        if hp.eye_occlusion_weight:
            occlusion = out["occlusion_map"]
            terms["eye_occlusion"] = eye_occlusion_loss(occlusion, eye_lmk,
                                                        self.eye_boxes(eye_lmk, frame_size, occlusion.shape[-1]),
                                                        power=hp.eye_occlusion_power,
                                                        margin=hp.eye_occlusion_margin)
        return terms

    @staticmethod
    def eye_boxes(eye_lmk: torch.Tensor, frame_size: int, size: int) -> torch.Tensor:
        """(B, 2, 12, 2) landmarks of square `frame_size`-px frames -> (B, size, size): both frames' box per eye."""
        return mouth_mask(eye_lmk.reshape(len(eye_lmk), -1, schema.EYE_POINTS, 2), frame_size, frame_size,
                          size).amax(dim=1)

    def eye_points(self, batch: dict) -> torch.Tensor | None:
        """(B, 2, 12, 2) source and driving eye landmarks when an eye term (`eye_region_weight`,
        `eye_occlusion_weight`) is on and the batch has them."""
        hp = self.hparams
        if not (hp.eye_region_weight or hp.eye_occlusion_weight) or "driving_eye_lmk" not in batch:
            return None
        return torch.stack((batch["source_eye_lmk"], batch["driving_eye_lmk"]), dim=1).float()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        source, driving = batch["source"].float() / 255, batch["driving"].float() / 255
        regions, eye_lmk = self.regions(batch, *source.shape[-2:]), self.eye_points(batch)
        # masks (one (B, R, H, W) tensor) and landmarks follow the pair through its flips
        masks = torch.cat(list(regions.values()), dim=1) if regions else None
        source, driving, *extra = self.augment(source, driving, masks, eye_lmk)
        if regions:
            masks = extra.pop(0)
            regions = dict(zip(regions, masks.split(1, dim=1)))
        if eye_lmk is not None:
            eye_lmk = extra.pop(0)
        losses, out = self.losses(source, driving, regions, self.occlusion_holes(len(source), source.device), eye_lmk)
        loss = sum(losses.values())
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=True)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        if self.trainer.is_global_zero and self.global_step % self.hparams.image_every_n_steps == 0:
            self.log_grid("train/samples", source, driving, out)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        source, driving = batch["source"].float() / 255, batch["driving"].float() / 255
        out = self.model(source, driving)
        self.log("val/l1", (out["prediction"] - driving).abs().mean(), on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(source))
        eye_lmk = self.eye_points(batch)
        if eye_lmk is not None:  # the eye terms that are on, unweighted (as the region terms below)
            self.log_dict({f"val/{k}": v for k, v in self.eye_terms(out, eye_lmk, source.shape[-1]).items()},
                          on_epoch=True, sync_dist=True, batch_size=len(source))
        for name, region in self.regions(batch, *source.shape[-2:]).items():
            # the region's own reconstruction error (unweighted): the parts that make a face talk and blink
            self.log(f"val/{name}_l1", weighted_l1(out["prediction"], driving, region), on_epoch=True, sync_dist=True,
                     batch_size=len(source))
        if self.reconstruction_probe is not None:
            self.reconstruction_probe.update(out["prediction"], driving, source)
        if batch_idx == 0 and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.log_grid("val/samples", source, driving, out)

    def on_validation_epoch_end(self) -> None:
        if self.reconstruction_probe is not None:
            if not self.trainer.sanity_checking:  # as A2VStage: the sanity check's few pairs are not a figure
                # the metrics sum their states across ranks in compute(); every rank logs the same values
                self.log_dict({f"val/{k}": v for k, v in self.reconstruction_probe.compute().items()})
            self.reconstruction_probe.reset()

    def log_grid(self, key: str, source, driving, out) -> None:
        """Rows: source, driving, reconstruction, the decoder's own image (what it paints where the occlusion map is
        low), flow (colour wheel), occlusion."""
        size = source.shape[-2:]

        def up(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, size=size, mode="nearest")

        rows = [source, driving, out["prediction"], out["decoded"], up(flow_to_rgb(out["optical_flow"])),
                up(out["occlusion_map"]).expand(-1, 3, -1, -1)]
        log_images(self.loggers, key, image_grid(rows), self.global_step,
                   caption="source / driving / reconstruction / decoder's own image / flow / occlusion")

    def configure_optimizers(self):
        hp = self.hparams
        # official LFG optimizer (fused kernel on CPU: the same update)
        make = self.optimizer or partial(torch.optim.Adam, betas=(0.5, 0.999), fused=fused_on_cpu(self.model.parameters()))
        optimizer = make(self.model.parameters(), lr=hp.lr)
        return {"optimizer": optimizer, "lr_scheduler": cosine_schedule(optimizer, self.trainer, hp.lr, hp.min_lr)}
