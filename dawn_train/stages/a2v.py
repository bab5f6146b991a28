"""Stage 3: A2V-FDM (audio-to-video flow diffusion) with the two-stage curriculum (TCL).

Each step (official `train_vdm_..._6D*.py`, spec sections 4.1-4.6):
  frames uint8 (B, L, 3, H, W) -> float [0, 1] -> frozen LFG `encode(ref, frames)`
  -> flow (B, L, h, w, 2), occlusion (B, L, 1, h, w) -> x_start (B, 3, L, h, w) = [flow x, flow y, 2 occ - 1];
  reference feature = LFG bottleneck of the reference frame (B, C_ref, h, w);
  face box of the reference frame -> the official 6-vector (face-location mask);
  condition per frame = [audio_feat | pose - ref_pose | blink - ref_blink] (B, L, D + 6 + 2);
  loss = eps-MSE (per-frame null condition with the diffusion's `null_cond_prob`, 0.1)
       + flow_loss_weight * (x0 flow/occlusion error of the thresholded x0 prediction)
       + mouth_loss_weight * (eps error inside the mouth box, per masked latent pixel).

Pose/blink units: the deltas are taken in the shards' raw units (schema: degrees for the three
angles, scale = face height / crop, tx, ty in crop pixels; blink = lid distance / eye width), exactly as
the official code feeds its raw 3DDFA values.  `pose_scale` multiplies the six pose deltas if a
dataset's units differ wildly (default: none, so official weights see official-style inputs; note that
official 3DDFA scale/translations live in another space, see `data/schema.py`); `blink_scale` and
`motion_shift` bring the deltas where the UNet's SiLU input tells negative ones apart (default off).

Curriculum: stage 1 = clips of 20 frames whose first frame is the reference; stage 2 = L drawn per batch
in [30, 40] with a random reference from the whole chunk, initialised from stage-1 weights (`init_from`).
The DataModule draws the clips (`A2VDataModule(clip_len, clip_len_max, reference)`); this module only
records `curriculum_stage` and warns when the data settings contradict it.

Differences from the official trainer: EMA weights (sampling and validation use them), the never-trained
face-location encoder is trained and saved (spec section 9.1), per-clip colour jitter (optional) instead of
one draw per batch, LR schedule expressed in optimizer steps (cosine to `min_lr`).
"""
from __future__ import annotations

from functools import partial
from typing import Literal, Optional

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from dawn_train.checkpoints import load_model, load_strict, open_checkpoint
from dawn_train.log import get_logger
from dawn_train.metrics.suite import MetricSuite
from dawn_train.metrics.synthetic import SyntheticSuite, mouth_from_landmarks
from dawn_train.models.a2v.conditioning import MOTION_DIM, animate, condition, face_box_vector, latent_target, mouth_mask
from dawn_train.stages.augment import clip_color_jitter
from dawn_train.stages.callbacks import SampleVideo
from dawn_train.stages.common import DawnStage, save_hyperparameters
from dawn_train.stages.compiled import compile_forward, restore_forward
from dawn_train.stages.ema import EMA
from dawn_train.stages.optim import cosine_schedule, fused_on_cpu
from dawn_train.stages.reference_stats import ReferenceStats

log = get_logger(__name__)
# curriculum stage -> which frame of the chunk is the reference (dawn_train.data.clips.A2VClip); the CLI links it
CURRICULUM_REFERENCE = {1: "first", 2: "random"}


def freeze_unused(model: nn.Module) -> int:
    """Freeze the cross-attention weights of unconditioned ResBlocks (the UNet head blocks own them, as
    the release checkpoint does, but never use them; unused trainable parameters break DDP).  Returns the
    number of frozen tensors."""
    frozen = 0
    for module in model.modules():
        if hasattr(module, "cross_attn_aud") and getattr(module, "audio_mlp", 0) is None:
            for name in ("cross_attn_aud", "cross_attn_pose", "cross_attn_eye"):
                for p in getattr(module, name).parameters():
                    p.requires_grad_(False)
                    frozen += 1
    return frozen


class A2VStage(DawnStage):
    """Args:
        model: the A2VFDM (YAML `class_path: dawn_train.models.a2v.build_a2v`).
        lfg_checkpoint: trained LFG (Lightning .ckpt, converted file or official .pth); frozen, eval mode,
            not trained and not written into this stage's checkpoints.
        curriculum_stage: 1 (short clips, reference = first frame) or 2 (long clips, random reference).
        init_from: weights to start from (stage-1 .ckpt for stage 2, or an official DAWN .pth); not a resume.
        init_from_ema: start from the EMA weights of `init_from` when it has them (default: raw weights).
        lr, min_lr, warmup_steps: peak learning rate (official 2e-4), warm-up, cosine to `min_lr` over the run.
        optimizer: builds the optimizer as `optimizer(params, lr=lr)` (YAML `class_path`/`init_args`);
            None = the official Adam, betas (0.9, 0.99).
        flow_loss_weight, flow_loss_type: auxiliary x0 loss on flow + occlusion (official 0.15, "l2").
        mouth_loss_weight: eps loss inside the mouth box (official 0.15).
        pose_scale: optional per-dimension factors for the six pose deltas (None = raw units, official).
        blink_scale, motion_shift: the blink deltas are multiplied by `blink_scale`, and `motion_shift` is added to
            every scaled pose and blink delta (official: 1 and 0).  The condition enters the UNet through SiLU,
            which maps every delta below about -3 to ~0 (a head turned left looks unturned): scaled to about +-2
            and shifted by 3, both directions reach the model (`models/a2v/conditioning.condition`).
        audio_mean, audio_std: the audio features enter the condition as (feature - mean) / std (official
            HuBERT: 0, 1; the built-in log-mel needs about -8.6, 3.8, see `condition`).  Recorded in the
            checkpoint, so generate and eval condition exactly as training did.
        color_jitter: (brightness, contrast, saturation, hue) maxima, one draw per clip (official
            (0.25, 0.25, 0.25, 0.04) once per batch); None = off.
        timestep_range: draw training steps t in [lo, hi) instead of [0, T) (diagnostics and tests).
        ema_decay: EMA decay (None = no EMA, sampling uses the raw weights); ema_warmup: decay warm-up.  With
            `init_from` the average starts from the checkpoint's EMA but its warm-up starts over, so it soon
            follows the new stage's weights; `ema_warmup: false` continues the old average at the full decay.
        lfg_chunk_size: frames per LFG call when encoding/decoding (memory bound).
        sample_every_n_val: log a sampled clip every N validations (0 = never); sample_steps: DDIM steps;
        sample_seed: seeds validation noise and sampling (validation losses are comparable across runs).
        probe: synthetic-probe file (`dawn-train data probe`): on synthetic data, validation samples are scored
            against the ground truth (`metrics/synthetic`: PSNR, SSIM, mouth sync, Blink/s, pose and identity
            error) and beside the still-frame baseline, logged as `val/synth/*` and `val/synth_still/*`.
        train_face_loc: train the face-location encoder (the release never did).
        compile_backend, compile_mode: `torch.compile` the UNet's training forward with this backend ("inductor"
            on GPUs: 2.0x samples/s on an H200, after ~4 minutes of compilation; docs/performance.md) and mode;
            None = eager.  Validation and sampling stay eager; where compilation fails, training continues
            eagerly after one warning (`stages/compiled.py`).
    """

    def __init__(self, model: nn.Module, lfg_checkpoint: str, curriculum_stage: int = 1, init_from: Optional[str] = None,
                 init_from_ema: bool = False, lr: float = 2e-4, optimizer: Optional[OptimizerCallable] = None,
                 min_lr: float = 1e-6, warmup_steps: int = 0, flow_loss_weight: float = 0.15,
                 flow_loss_type: Literal["l1", "l2"] = "l2", mouth_loss_weight: float = 0.15,
                 pose_scale: Optional[tuple[float, ...]] = None, blink_scale: float = 1.0,
                 motion_shift: float = 0.0, audio_mean: float = 0.0, audio_std: float = 1.0,
                 color_jitter: Optional[tuple[float, float, float, float]] = None,
                 timestep_range: Optional[tuple[int, int]] = None, ema_decay: Optional[float] = 0.9999,
                 ema_warmup: bool = True, lfg_chunk_size: Optional[int] = 256, sample_every_n_val: int = 1,
                 sample_steps: int = 20, sample_seed: int = 0, train_face_loc: bool = True,
                 val_metrics: Optional[list[str]] = None, metric_weights: Optional[dict[str, str]] = None,
                 val_metric_batches: int = 1, probe: Optional[str] = None, compile_backend: Optional[str] = None,
                 compile_mode: Optional[str] = None):
        super().__init__()
        save_hyperparameters(self)
        self.optimizer = optimizer
        if curriculum_stage not in (1, 2):
            raise ValueError(f"A2VStage: curriculum_stage must be 1 or 2, got {curriculum_stage}")
        if flow_loss_type not in ("l1", "l2"):
            raise ValueError(f"A2VStage: flow_loss_type must be 'l1' or 'l2', got {flow_loss_type!r}")
        if pose_scale is not None and len(pose_scale) != 6:
            raise ValueError(f"A2VStage: pose_scale needs 6 values (yaw, pitch, roll, scale, tx, ty), got {pose_scale}")
        if not audio_std > 0:
            raise ValueError(f"A2VStage: audio_std must be > 0, got {audio_std}")
        self.model = model
        # The frozen LFG is held outside the module tree: it is not trained, not saved in this stage's checkpoints
        # (the file stays small and the LFG swappable), and a strategy that casts the module (DeepSpeed bf16) does
        # not cast it: it always runs in float32 on the stage's device (see the `lfg` property).
        self._frozen_lfg = [load_model(lfg_checkpoint, "lfg").eval().requires_grad_(False)]
        # Table 1 metrics on DDIM samples of the first `val_metric_batches` validation batches
        # (networks from `metric_weights`: fid, i3d, syncnet, arcface; missing -> logged as unavailable)
        self.metric_suite = MetricSuite(metric_weights, tuple(val_metrics)) if val_metrics else None
        # synthetic data: ground-truth quality of the same samples, read by the probe from the generated frames
        # (`dawn-train data probe`), each beside the still-frame baseline; the probe's pose and eye readings of
        # the generated frames also feed BAS and Blink/s
        self.synthetic = SyntheticSuite(probe) if probe else None
        for reason in (self.synthetic.unavailable.values() if self.synthetic else ()):
            log.warning("%s", reason)
        for reason in (self.metric_suite.unavailable.values() if self.metric_suite else ()):
            log.warning("%s", reason)
        ema_init = None
        if init_from:
            start = open_checkpoint(init_from, "a2v")
            load_strict(self.model, start.state_dict, init_from)
            ema_init = start.ema_state_dict
            if init_from_ema:
                if ema_init is None:
                    raise ValueError(f"A2VStage: init_from_ema is set but {init_from} holds no EMA weights")
                load_strict(self.model, ema_init, init_from)
        freeze_unused(self.model)
        if not train_face_loc:
            self.model.face_loc_emb.requires_grad_(False)
        self.ema = EMA(self.model, ema_decay, ema_warmup) if ema_decay is not None else None
        if self.ema is not None and ema_init is not None:
            load_strict(self.ema.model, ema_init, init_from)
        self.audio_feature: Optional[dict] = None  # manifest feature spec, recorded in checkpoints
        self.image_size: Optional[int] = None
        self.reference_stats = ReferenceStats()  # generate's defaults for a portrait, recorded in checkpoints

    # ---- modules ---------------------------------------------------------------------------------
    @property
    def sampling_model(self) -> nn.Module:
        """The weights used for validation and sampling: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def lfg(self) -> nn.Module:
        """The frozen LFG, float32, eval mode (BatchNorm statistics stay those of the trained LFG), on this
        stage's device."""
        lfg = self._frozen_lfg[0]
        weight = next(lfg.parameters())
        if weight.device != self.device or weight.dtype != torch.float32:
            lfg.to(device=self.device, dtype=torch.float32)
        return lfg

    def _check_strategy(self) -> None:
        strategy = self.trainer.strategy
        if self.ema is not None and getattr(strategy, "zero_stage_3", False):
            raise ValueError("A2VStage: the EMA copy cannot be kept under DeepSpeed ZeRO-3 (its parameters are "
                             "sharded across ranks): use experiments/strategies/deepspeed_stage_2.yaml, or turn the "
                             "EMA off with --model.init_args.ema_decay=null")

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            self._check_strategy()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        manifest = getattr(datamodule, "manifest", None)
        if manifest:
            self.audio_feature = dict(manifest["feature"])
            want = self.model.unet.cond_dim - MOTION_DIM
            if self.audio_feature["dim"] != want:
                raise ValueError(f"A2VStage: the shards' audio feature is {self.audio_feature['dim']}-d "
                                 f"({self.audio_feature.get('type')}), the model expects cond_aud={want}: set "
                                 f"model.init_args.model.init_args.cond_aud: {self.audio_feature['dim']}")
        reference = getattr(datamodule, "reference", None)
        expected = CURRICULUM_REFERENCE[self.hparams.curriculum_stage]
        if reference is not None and reference != expected and self.trainer.is_global_zero:
            log.warning("curriculum_stage %d normally uses reference='%s', the DataModule has '%s'",
                        self.hparams.curriculum_stage, expected, reference)

    def on_fit_start(self) -> None:
        # DeepSpeed bf16 casts the whole module (after the stage was built, before this hook).  Precision stated
        # in README "Strategies": the UNet computes in bf16; the noise schedule and the EMA copy stay float32 (a
        # bf16 EMA with decay 0.9999 would barely move; it averages the weights the model computes with); the
        # frozen LFG runs in float32 outside any autocast.
        diffusion = self.model.diffusion
        for name, buffer in list(diffusion.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                diffusion._buffers[name] = buffer.float()
        if self.ema is not None:
            self.ema.float()
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        info = {"curriculum_stage": self.hparams.curriculum_stage, "trainable_params": trainable,
                "audio_feature": (self.audio_feature or {}).get("type", "unknown")}
        for logger in self.loggers:
            logger.log_hyperparams(info)
        if self.trainer.is_global_zero:
            log.info("curriculum stage %d, %s trainable parameters, EMA %s", info["curriculum_stage"],
                     f"{trainable:,}", "on" if self.ema is not None else "off")
        if self.hparams.compile_backend:
            compile_forward(self.model.unet, self.hparams.compile_backend, self.hparams.compile_mode,
                            name="A2V-FDM UNet")

    def teardown(self, stage: str) -> None:
        restore_forward(self.model.unet)  # the module is plain again for whatever runs after fit (export, tests)

    # ---- one step ----------------------------------------------------------------------------------
    def prepare(self, batch: dict) -> dict:
        """Batch -> diffusion inputs: x_start (B, 3, L, h, w), ref (B, 3, H, W) in [0, 1], ref_fea,
        box (B, 6), cond (B, L, D + 8), mouth (B, L, h, w)."""
        frames = batch["frames"].float() / 255
        ref = batch["ref_frame"].float() / 255
        if self.training and self.hparams.color_jitter:
            ref, frames = clip_color_jitter(ref, frames, self.hparams.color_jitter)
        height, width = frames.shape[-2:]
        lfg = self.lfg
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            flow, occlusion = lfg.encode(ref, frames, chunk_size=self.hparams.lfg_chunk_size)
            ref_fea = lfg.reference_feature(ref)
        want = self.model.unet.channels - 3 - self.model.face_loc_emb.conv2.out_channels
        if ref_fea.shape[1] != want:
            raise ValueError(f"A2VStage: the LFG reference feature has {ref_fea.shape[1]} channels, the UNet "
                             f"expects ref_channels={want} (model.init_args.model.init_args.ref_channels)")
        cond = condition(batch["audio_feat"], batch["pose"], batch["blink"], batch["ref_pose"], batch["ref_blink"],
                         **self.condition_settings())
        if cond.shape[-1] != self.model.unet.cond_dim:
            raise ValueError(f"A2VStage: condition has {cond.shape[-1]} features (audio {batch['audio_feat'].shape[-1]}"
                             f" + 8), the UNet expects {self.model.unet.cond_dim} (check cond_aud)")
        return dict(x_start=latent_target(flow, occlusion), ref=ref, ref_fea=ref_fea,
                    box=face_box_vector(batch["ref_face_box"], height, width), cond=cond,
                    mouth=mouth_mask(batch["mouth_lmk"], height, width, ref_fea.shape[-1]))

    def losses(self, inputs: dict, model: nn.Module, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """The three official terms and their weighted sum (`loss`)."""
        hp = self.hparams
        x_start = inputs["x_start"]
        diffusion = model.diffusion
        lo, hi = hp.timestep_range or (0, diffusion.num_timesteps)
        t = torch.randint(lo, hi, (x_start.shape[0],), device=x_start.device, generator=generator)
        out = diffusion.p_losses(x_start, t, model.context(inputs["ref_fea"], inputs["box"]), inputs["cond"],
                                 generator=generator)
        eps = out["loss"].float()  # (B, 3, L, h, w) unreduced
        pred = out["pred_x0"].float()
        def err(d: Tensor) -> Tensor:
            return d.abs() if hp.flow_loss_type == "l1" else d.square()

        occ = (x_start[:, 2] + 1) / 2
        flow = err(pred[:, :2] - x_start[:, :2]).mean() + err((pred[:, 2] + 1) / 2 - occ).mean()
        mouth = inputs["mouth"][:, None]  # (B, 1, L, h, w), broadcast over the 3 channels
        mouth_loss = (eps * mouth).sum() / mouth.sum().clamp(min=1.0)
        diff = eps.mean()
        total = diff + hp.flow_loss_weight * flow + hp.mouth_loss_weight * mouth_loss
        return {"loss": total, "loss_diffusion": diff, "loss_flow": flow, "loss_mouth": mouth_loss}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        inputs = self.prepare(batch)
        if self.image_size is None:
            self.image_size = int(batch["frames"].shape[-1])
        self.reference_stats.update(batch)
        losses = self.losses(inputs, self.model)
        loss = losses["loss"]
        b, length = inputs["cond"].shape[:2]
        self.log("train/loss", losses.pop("loss"), on_step=True, prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=True, batch_size=b)
        self.log("train/clip_len", float(length), on_step=True, batch_size=b)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # One EMA update per optimizer step, before any callback's on_train_batch_end can write a checkpoint.
        # DeepSpeed accumulates gradients itself: it is called on every micro-batch and steps on its own k-th
        # (counted across epochs; an fp16 overflow skips one too), so ask the engine whether the weights moved
        # (the average moved on every micro-batch before: 8 updates for 4 steps).
        super().optimizer_step(*args, **kwargs)
        engine = getattr(self.trainer.strategy, "deepspeed_engine", None)
        if self.ema is not None and (engine is None or engine.was_step_applied()):
            self.ema.update(self.model)

    def configure_callbacks(self) -> list[L.Callback]:
        every = self.hparams.sample_every_n_val
        return [SampleVideo(every)] if every else []

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        inputs = self.prepare(batch)
        generator = torch.Generator(device=self.device).manual_seed(self.hparams.sample_seed + batch_idx)
        losses = self.losses(inputs, self.sampling_model, generator)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, on_epoch=True, sync_dist=True,
                      batch_size=inputs["cond"].shape[0], prog_bar=False)
        if (self.metric_suite is not None or self.synthetic is not None) and batch_idx < self.hparams.val_metric_batches:
            self.update_metrics(batch, inputs)
        return {"inputs": inputs}  # for the SampleVideo callback

    def update_metrics(self, batch: dict, inputs: dict) -> None:
        """Sample every clip of the batch (EMA weights, driven by its ground-truth pose/blink and its own audio,
        reference = the clip's reference frame) and add it to the metrics.  BAS and Blink/s of the samples are
        measured on the generated frames by the probe, or not at all."""
        for index in range(inputs["cond"].shape[0]):
            video = self.sample(inputs, index=index, seed=self.hparams.sample_seed + index)["video"].float()

            def one(x: Tensor) -> Tensor:
                return x[index:index + 1].float()

            real = one(batch["frames"]) / 255
            reading = None
            if self.synthetic is not None:
                mouth = mouth_from_landmarks(one(batch["mouth_lmk"]).cpu().numpy())
                reading = self.synthetic.update(video, real, one(inputs["ref"]), one(batch["pose"]),
                                                mouth=torch.as_tensor(mouth, device=video.device))
            if self.metric_suite is not None:
                self.metric_suite.update(video, real, one(inputs["ref"]), one(batch["audio"]), one(batch["pose"]),
                                         one(batch["blink"]), generated_pose=reading.pose if reading else None,
                                         generated_blink=reading.eyes if reading else None)

    def on_validation_epoch_end(self) -> None:
        if self.metric_suite is not None:
            if not self.trainer.sanity_checking:
                rows = self.metric_suite.compute()
                self.log_dict({f"val/{k}": v for k, v in rows["generated"].items() if v is not None}, sync_dist=False)
            self.metric_suite.reset()
        if self.synthetic is not None:
            if not self.trainer.sanity_checking:
                rows = self.synthetic.compute()
                for row, prefix in (("generated", "val/synth"), ("still frame", "val/synth_still")):
                    self.log_dict({f"{prefix}/{k}": v for k, v in rows[row].items() if v is not None}, sync_dist=False)
            self.synthetic.reset()

    # ---- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, inputs: dict, index: int = 0, steps: Optional[int] = None, seed: Optional[int] = None,
               model: Optional[nn.Module] = None) -> dict[str, Tensor]:
        """DDIM-sample clip `index` of prepared `inputs` with the sampling (EMA) weights and decode it.
        Returns x0 (1, 3, L, h, w) and video (1, L, 3, H, W) in [0, 1]."""
        one = slice(index, index + 1)
        seed = self.hparams.sample_seed if seed is None else seed
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return animate(self.lfg, model or self.sampling_model, inputs["ref"][one], inputs["box"][one],
                       inputs["cond"][one], generator=generator, steps=steps or self.hparams.sample_steps,
                       decode_chunk=self.hparams.lfg_chunk_size)

    # ---- checkpoints -------------------------------------------------------------------------------
    def condition_settings(self) -> dict:
        """The keyword arguments of `condition` this stage trains with (recorded as `condition` in checkpoints)."""
        hp = self.hparams
        return {"pose_scale": None if hp.pose_scale is None else [float(v) for v in hp.pose_scale],
                "audio_norm": [float(hp.audio_mean), float(hp.audio_std)],
                "blink_scale": float(hp.blink_scale), "motion_shift": float(hp.motion_shift)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dawn_a2v"] = {"lfg_checkpoint": self.hparams.lfg_checkpoint, "image_size": self.image_size,
                                  "audio_feature": self.audio_feature, "curriculum_stage": self.hparams.curriculum_stage,
                                  "condition": self.condition_settings(), **self.reference_stats.record()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # only the stage record: weights come from `state_dict` (Lightning) or the DeepSpeed engine
        info = checkpoint.get("dawn_a2v", {})
        self.image_size = info.get("image_size") or self.image_size
        self.audio_feature = info.get("audio_feature") or self.audio_feature
        self.reference_stats.restore(info)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        # official A2V-FDM optimizer (fused kernel on CPU: the same update)
        make = self.optimizer or partial(torch.optim.Adam, betas=(0.9, 0.99), fused=fused_on_cpu(params))
        optimizer = make(params, lr=hp.lr)
        return {"optimizer": optimizer,
                "lr_scheduler": cosine_schedule(optimizer, self.trainer, hp.lr, hp.min_lr, hp.warmup_steps)}
