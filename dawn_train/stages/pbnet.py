"""Stage 2: train PBNet, the audio-driven pose / blink CVAE (one stage class, two targets).

`target: pose` trains the 6-d head-pose model on `batch["pose"]`, `target: blink` the 2-d eye
openness model on `batch["blink"]`; the injected `PBNet` must have the matching dims
(pose: `pos_dim=6, eye_dim=0`; blink: `pos_dim=0, eye_dim=2`), as in the official release.

Losses (official `trainer_gan_ann.py`, with its known bugs fixed; see dawn_official_spec.md 3.3):
- `rc`  (weight 1): MSE between the predicted delta and the true delta from frame 0, valid frames only.
- `kl`  (`kl_weight`, official 0.004): per-frame Gaussian KL, valid frames only. Warm-up in optimizer
  steps: 0 for `kl_delay_steps`, then linear to `kl_weight` over `kl_warmup_steps` (logged as
  `train/kl_weight`). The official schedule is delay 100k steps (10k epochs of 10 iterations), no ramp
  (its `max` makes the weight keep growing after 800k steps; not reproduced). The KL is a mean over
  frames AND latent dims, so its strength per nat scales with 1 / `audio_latent_dim` and with the
  inverse square of the target's scale: 0.004 with the official 256-d latent is not 0.004 with a 16-d one.
- `prior_rho` (default 0 = official): the latent prior. 0 is z ~ N(0, I) independently per frame.
  In (0, 1) it is a stationary AR(1) process in time per latent dim (lag-1 correlation `prior_rho`,
  unit variance; `losses.kl_loss`), and generation samples that prior (`models/pbnet/units.prior_latent`,
  recorded in the checkpoint). Why: the posterior codes an event (a 3-6-frame blink, a slow head
  turn) as a shift held over several consecutive frames; independent per-frame noise almost never
  produces such a run, so white-prior samples of a short-trained model have no blinks and a jittery,
  small head motion. Against the AR(1) prior a held shift is cheap in KL and prior samples contain
  the same runs (tiny test models, tests/stages/test_pose_blink.py: 0 -> ~0.5 blinks/s, the data's rate,
  and 0.05-0.19 -> 0.35-0.58 of the data's pose std).
- `smooth` (`smooth_weight`, official 5e-4): on the PREDICTION, so it has a gradient (the official `reg`
  only sees the ground truth). `smoothness="match"` matches the predicted velocity to the true one,
  `"velocity"` shrinks the predicted velocity.
- optional adversarial term (`gan_weight > 0`, off by default): the official 1-D PatchGAN on absolute
  sequences, trained with properly alternating updates (manual optimisation: D step on detached fakes,
  then the CVAE step with D frozen), unlike the official single summed backward.
AdamW (weight decay 0.01) with linear warm-up and cosine decay `lr -> min_lr` over optimizer steps;
grad-norm clip `grad_clip` on the CVAE only.

Pose normalisation (blink ratios are used raw, as official; `target_scale`, default 1, then multiplies
the model units of either target: the tiny test blink model uses 10, so a blink is a ~2-unit input
the small embeddings and the KL see, not a 0.2 one). The official min-max ranges
(`[-90, 90]` deg for the angles, `[0, 1]` scale, `[0, 720]`/`[0, 1080]` translations) were made for
3DDFA units, where scale is ~5e-4 and tx/ty ~50-120 in a 120-px crop space: there they squash
scale and translation to near-constants. Our data (see `data/schema.py`) stores scale as face
height / crop size and tx/ty in crop pixels, so:
- `pose_norm="crop"` (default): the official angle range, scale in `[0, 1]` (already a fraction of
  the crop) and tx/ty in `[0, crop_size]`; every dimension then moves by a few hundredths per second
  of motion, like the angles. Set `crop_size` to the data's frame size (synthetic demo: 64, HDTF: 256).
- `pose_norm="official"`: the official ranges, for official weights and data in 3DDFA units.
- `pose_min`/`pose_max` (both 6-tuples) override either preset, e.g. with dataset percentiles.
The ranges, `target_scale` and `prior_rho` are hyper-parameters of the checkpoint, so
`inference.pose_blink` samples in the right units from the right prior. The tiny test pose model sets
`pose_min`/`pose_max` to about the data's centre +- 3 std of its motion per dimension (all six
dimensions then weigh alike in the MSE; with the crop ranges yaw dominates and ty barely moves).

Audio features enter as `(audio_feat - audio_mean) / audio_std` (default 0 / 1: HuBERT as is). The
built-in 80-bin log-mel feature is far from unit scale (mean about -8.6, std about 3.8 on the synthetic
data); unscaled, its embedding swamps the small pose/blink deltas after the encoder's LayerNorms and the
model only learns the mean, so the demo configs set these two values. They are checkpoint
hyper-parameters too.

Validation logs `val/rc`, `val/kl`, prior samples vs data (`val/pose_std_ratio`, per-dimension std in
dataset units, `val/step_ratio` = largest frame-to-frame step of samples / of data, `val/blink_rate_sample`
vs `val/blink_rate_data` in blinks/s, counted by `metrics.blink`), and a plot of generated vs real curves.
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from dawn_train.checkpoints import load_model_weights
from dawn_train.data.schema import BLINK_NAMES, POSE_NAMES
from dawn_train.metrics.blink import BlinkRate
from dawn_train.models.pbnet import PBNet, lengths_to_mask
from dawn_train.models.pbnet.losses import kl_loss, official_reg_loss, reconstruction_loss, smoothness_loss
from dawn_train.models.pbnet.units import PBNetUnits, pose_range, prior_latent
from dawn_train.stages.common import DawnStage, save_hyperparameters
from dawn_train.stages.optim import cosine_schedule, fused_on_cpu, total_optimizer_steps
from dawn_train.tracking.media import log_images

TARGET_DIMS = {"pose": dict(pos_dim=6, eye_dim=0), "blink": dict(pos_dim=0, eye_dim=2)}


def max_step(x: Tensor, mask: Tensor) -> Tensor:
    """Largest frame-to-frame change per dimension over consecutive valid frames.
    x: (B, T, D); mask: (B, T). Returns (D,)."""
    step = (x[:, 1:] - x[:, :-1]).abs()
    pair = (mask[:, 1:] & mask[:, :-1])[..., None]
    return step.masked_fill(~pair, 0.0).amax(dim=(0, 1))


def masked_std(x: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence std over valid frames, averaged over the batch. x: (B, T, D) -> (D,)."""
    m = mask[..., None].to(x.dtype)
    n = m.sum(1).clamp(min=1)
    mean = (x * m).sum(1) / n
    var = (((x - mean[:, None]) ** 2) * m).sum(1) / n
    return var.sqrt().mean(0)


def plot_curves(real: np.ndarray, generated: np.ndarray, names: tuple[str, ...], fps: int = 25,
                reconstruction: np.ndarray | None = None, title: str = "") -> np.ndarray:
    """Real vs generated curves, one panel per dimension -> uint8 (H, W, 3) image.
    real, generated, reconstruction: (T, D) in dataset units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = real.shape[1]
    fig, axes = plt.subplots(d, 1, figsize=(8, 1.4 * d + 0.6), sharex=True, squeeze=False)
    time = np.arange(real.shape[0]) / fps
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(time, real[:, i], color="black", lw=1.2, label="real")
        if reconstruction is not None:
            ax.plot(time, reconstruction[:, i], color="tab:blue", lw=0.8, ls="--", label="reconstruction")
        ax.plot(time, generated[:, i], color="tab:red", lw=1.0, label="generated")
        ax.set_ylabel(names[i], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


class SequenceDiscriminator(nn.Module):
    """The official 1-D PatchGAN (`D_patchgan`) on absolute sequences: (B, T, D) -> logits (B, T'),
    one per receptive-field patch (T' ~ T / 8 - 2). Training only; not part of the checkpoint formats."""

    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        w = width

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv1d(c_in, c_out, 4, stride, 1), nn.BatchNorm1d(c_out), nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(
            nn.Conv1d(dim, w, 4, 2, 1), nn.LeakyReLU(0.2),
            *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),
            nn.Conv1d(4 * w, 1, 4, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, D) -> (B, T')."""
        return rearrange(self.net(rearrange(x, "b t d -> b d t")), "b 1 t -> b t")


class PBNetStage(DawnStage):
    """Args:
        model: the PBNet to train (class_path/init_args in YAML); dims must match `target`.
        target: "pose" (batch["pose"], min-max normalised) or "blink" (batch["blink"], raw ratios).
        lr, min_lr, warmup_steps: peak learning rate, linear warm-up and cosine decay over optimizer steps.
        optimizer: builds the optimizers as `optimizer(params, lr=lr)` (YAML `class_path`/`init_args`);
            None = the official AdamW, weight decay 0.01.  The discriminator's gets `lr=d_lr`.
        grad_clip: grad-norm clip of the CVAE (official 2.0; None = off).
        kl_weight, kl_delay_steps, kl_warmup_steps: KL weight and its warm-up (module docstring).
        smooth_weight, smoothness: smoothness term on the prediction ("match" or "velocity").
        prior_rho: latent prior, 0 = official N(0, I) per frame, (0, 1) = AR(1) in time (module docstring).
        target_scale: model units = (pose min-max normalised | raw blink) x target_scale.
        rel_bias_lr_mult: lr multiplier of the decoder's relative-position bias tables (official 1). They
            are what lets a frame attend to its own latent; short CPU runs need them to learn faster.
        pose_norm, crop_size, pose_min, pose_max: pose normalisation (module docstring).
        audio_mean, audio_std: audio features are fed as (audio_feat - audio_mean) / audio_std.
        gan_weight: adversarial weight for the CVAE (0 = no discriminator, the default); d_lr: its lr.
            With a discriminator, Lightning counts both optimizers' steps in `global_step` and
            `trainer.max_steps` (set max_steps = 2 x the batches you want); schedules use batches.
        blink_relative_threshold, blink_min_frames: blink counter of the validation Blink/s.
        plot_every_n_val: plot curves on every n-th validation (rank zero, first batch).
        init_from: weights to start from (official raw state dict, converted file or .ckpt); not a resume.
    """

    def __init__(self, model: PBNet, target: Literal["pose", "blink"] = "pose", lr: float = 4e-4,
                 min_lr: float = 2e-5, optimizer: OptimizerCallable | None = None, warmup_steps: int = 0,
                 grad_clip: float | None = 2.0, kl_weight: float = 0.004, kl_delay_steps: int = 0,
                 kl_warmup_steps: int = 2000, smooth_weight: float = 5e-4,
                 smoothness: Literal["match", "velocity"] = "match", prior_rho: float = 0.0,
                 target_scale: float = 1.0, rel_bias_lr_mult: float = 1.0,
                 pose_norm: Literal["crop", "official"] = "crop",
                 crop_size: float = 256.0, pose_min: tuple[float, ...] | None = None,
                 pose_max: tuple[float, ...] | None = None, audio_mean: float = 0.0, audio_std: float = 1.0,
                 gan_weight: float = 0.0, d_lr: float = 4e-4,
                 blink_relative_threshold: float = 0.6, blink_min_frames: int = 2, plot_every_n_val: int = 1,
                 init_from: str | None = None):
        super().__init__()
        save_hyperparameters(self)
        self.optimizer = optimizer
        if target not in TARGET_DIMS:
            raise ValueError(f"PBNetStage: target must be 'pose' or 'blink', got {target!r}")
        want = TARGET_DIMS[target]
        if (model.pos_dim, model.eye_dim) != (want["pos_dim"], want["eye_dim"]):
            raise ValueError(f"PBNetStage: target {target!r} needs a PBNet with pos_dim={want['pos_dim']}, "
                             f"eye_dim={want['eye_dim']}; got pos_dim={model.pos_dim}, eye_dim={model.eye_dim}")
        if audio_std <= 0:
            raise ValueError(f"PBNetStage: audio_std must be > 0, got {audio_std}")
        if smoothness not in ("match", "velocity"):
            raise ValueError(f"PBNetStage: smoothness must be 'match' or 'velocity', got {smoothness!r}")
        if not 0.0 <= prior_rho < 1.0:
            raise ValueError(f"PBNetStage: prior_rho must be in [0, 1), got {prior_rho}")
        if target_scale <= 0 or rel_bias_lr_mult <= 0:
            raise ValueError(f"PBNetStage: target_scale and rel_bias_lr_mult must be > 0, got {target_scale}, "
                             f"{rel_bias_lr_mult}")
        self.target = target
        self.model = model
        if init_from:
            load_model_weights(self.model, init_from, kind=f"pbnet-{target}")
        pose_range(pose_norm, crop_size, pose_min, pose_max)  # validates the pose normalisation settings
        self.units = PBNetUnits.of_hparams(self.hparams)
        self.names = POSE_NAMES if target == "pose" else BLINK_NAMES
        self.discriminator = SequenceDiscriminator(model.feature_dim) if gan_weight > 0 else None
        self.automatic_optimization = self.discriminator is None
        if target == "blink":
            blink_kw = dict(relative_threshold=blink_relative_threshold, min_frames=blink_min_frames)
            self.blink_rate_sample, self.blink_rate_data = BlinkRate(**blink_kw), BlinkRate(**blink_kw)
        self._val_count = 0

    def setup(self, stage: str) -> None:
        # `fit` sizes audio_dim from the manifest (stages/cli.py); a model built otherwise (a checkpoint's
        # hyper-parameters, Python) may not match: say which sizes differ, not a matmul shape error mid-step
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        feature = (getattr(datamodule, "manifest", None) or {}).get("feature") or {}
        if feature.get("dim") is not None and feature["dim"] != self.model.audio_dim:
            raise ValueError(f"PBNetStage: the shards' audio features are {feature['dim']}-d ({feature.get('type')}, "
                             f"{datamodule.shards}/manifest.json), the PBNet takes {self.model.audio_dim}-d: set "
                             f"model.init_args.model.init_args.audio_dim: {feature['dim']}, or use shards of the "
                             f"feature the model was trained on")

    # --- units ----------------------------------------------------------------------------
    def to_model_units(self, x: Tensor) -> Tensor:
        """Dataset units -> model units (pose: min-max normalised; blink: unchanged; x target_scale). (..., D)."""
        return self.units.to_model(x, self.target)

    def to_data_units(self, x: Tensor) -> Tensor:
        """Model units -> dataset units. (..., D)."""
        return self.units.to_data(x, self.target)

    def inputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """-> x (B, T, D) in model units (0 on padded frames), audio (B, T, A), mask (B, T)."""
        raw = batch[self.target].float()
        audio = self.units.audio(batch["audio_feat"].float())
        mask = lengths_to_mask(batch["length"].to(raw.device), raw.shape[1])
        return self.to_model_units(raw).masked_fill(~mask[..., None], 0.0), audio, mask

    # --- losses ---------------------------------------------------------------------------
    @property
    def batches_done(self) -> int:
        """Optimizer steps of the CVAE (= batches; `global_step` counts D's steps too with a GAN)."""
        return self.global_step // (1 if self.automatic_optimization else 2)

    def kl_weight_at(self, step: int) -> float:
        hp = self.hparams
        if step < hp.kl_delay_steps:
            return 0.0
        if hp.kl_warmup_steps <= 0:
            return hp.kl_weight
        return hp.kl_weight * min(1.0, (step - hp.kl_delay_steps + 1) / hp.kl_warmup_steps)

    def losses(self, x: Tensor, audio: Tensor, mask: Tensor, step: int,
               generator: torch.Generator | None = None) -> tuple[dict, dict]:
        """Unweighted terms, the weighted total under "loss" and the model output (the posterior sample drawn with
        `generator`, else from the global RNG)."""
        hp = self.hparams
        out = self.model(x, audio, mask, generator=generator)
        target = out["x_delta"]
        terms = {
            "rc": reconstruction_loss(out["output"], target, mask),
            "kl": kl_loss(out["mu"], out["logvar"], mask, rho=hp.prior_rho),
            "smooth": smoothness_loss(out["output"], mask, target if hp.smoothness == "match" else None),
        }
        w_kl = self.kl_weight_at(step)
        terms["loss"] = terms["rc"] + w_kl * terms["kl"] + hp.smooth_weight * terms["smooth"]
        terms["kl_weight"] = torch.tensor(w_kl)
        return terms, out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        x, audio, mask = self.inputs(batch)
        terms, out = self.losses(x, audio, mask, self.batches_done)
        if self.discriminator is not None:
            terms.update(self.adversarial_step(x, out["output"], mask, terms["loss"]))
        bs = len(x)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, on_step=True, batch_size=bs)
        self.log("train/loss", terms["loss"], on_step=True, prog_bar=True, batch_size=bs)
        self.log("train/reg_official", official_reg_loss(out["x_delta"]), on_step=True, batch_size=bs)
        return terms["loss"] if self.automatic_optimization else None

    def adversarial_step(self, x: Tensor, delta: Tensor, mask: Tensor, vae_loss: Tensor) -> dict:
        """One discriminator update on detached fakes, then one CVAE update with D frozen."""
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        keep = mask[..., None].to(x.dtype)
        real, fake = x * keep, (delta + x[:, :1]) * keep  # absolute sequences, padded frames zeroed

        self.toggle_optimizer(opt_d)
        logits_real, logits_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                  + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        logits = self.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        opt_g.zero_grad()
        self.manual_backward(vae_loss + self.hparams.gan_weight * g_loss)
        if self.hparams.grad_clip:
            self.clip_gradients(opt_g, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        sched_g.step()
        sched_d.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "loss": vae_loss + self.hparams.gan_weight * g_loss}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val or self.hparams.grad_clip  # the Trainer's value wins if set
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    # --- validation -----------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, audio, mask = self.inputs(batch)
        bs = len(x)
        # Validation draws from generators of its own, never from the global RNG: with it, the number of validation
        # clips changed the noise of every later training step (a PBNet trained with 8 clips != one with 4).  The
        # posterior's seeds sit 2**31 above the prior samples' (below), so the two draws are not the same noise.
        posterior = torch.Generator(device=x.device).manual_seed(2**31 + batch_idx)
        terms, out = self.losses(x, audio, mask, self.batches_done, generator=posterior)
        self.log_dict({f"val/{k}": terms[k] for k in ("rc", "kl", "smooth", "loss")}, on_epoch=True,
                      prog_bar=False, sync_dist=True, batch_size=bs)
        # prior samples from the real first frame, as at inference (fixed seed per batch)
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)
        z = prior_latent(self.model, *mask.shape, self.hparams.prior_rho, generator=generator, device=x.device,
                         dtype=audio.dtype)
        sample = self.to_data_units(self.model.generate(x[:, :1], audio, mask=mask, z=z))
        real = batch[self.target].float()
        std_sample, std_real = masked_std(sample, mask), masked_std(real, mask)
        stats = {"val/pose_std_ratio" if self.target == "pose" else "val/blink_std_ratio":
                 (std_sample / std_real.clamp(min=1e-6)).mean(),
                 "val/step_ratio": (max_step(sample, mask) / max_step(real, mask).clamp(min=1e-6)).mean()}
        stats.update({f"val/std_sample/{n}": s for n, s in zip(self.names, std_sample)})
        stats.update({f"val/std_data/{n}": s for n, s in zip(self.names, std_real)})
        self.log_dict(stats, on_epoch=True, sync_dist=True, batch_size=bs)
        if self.target == "blink":
            lengths = mask.sum(1)
            self.blink_rate_sample.update(sample, lengths)
            self.blink_rate_data.update(real, lengths)
            self.log("val/blink_rate_sample", self.blink_rate_sample, on_epoch=True, batch_size=bs)
            self.log("val/blink_rate_data", self.blink_rate_data, on_epoch=True, batch_size=bs)
        plot_now = self._val_count % max(1, self.hparams.plot_every_n_val) == 0
        if batch_idx == 0 and plot_now and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            n = int(mask[0].sum())
            recon = self.to_data_units(out["output"] + x[:, :1])
            image = plot_curves(real[0, :n].cpu().numpy(), sample[0, :n].cpu().numpy(), self.names,
                                reconstruction=recon[0, :n].float().cpu().numpy(),
                                title=f"{self.target}: real vs generated (prior z), step {self.global_step}")
            log_images(self.loggers, f"val/{self.target}_curves", image, self.global_step,
                       caption="black: real, red: generated from the first frame and audio, blue: reconstruction")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._val_count += 1

    # --- optimisation ---------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """AdamW parameter groups of the CVAE: the relative-position bias tables at lr x rel_bias_lr_mult
        (one group when the multiplier is 1), everything else at lr."""
        hp = self.hparams
        named = list(self.model.named_parameters())
        if hp.rel_bias_lr_mult == 1:
            return [{"params": [p for _, p in named]}]
        is_bias = lambda name: "relative_attention_bias" in name  # noqa: E731
        return [{"params": [p for n, p in named if not is_bias(n)]},
                {"params": [p for n, p in named if is_bias(n)], "lr": hp.lr * hp.rel_bias_lr_mult}]

    def configure_optimizers(self):
        hp = self.hparams
        # official PBNet optimizer (fused kernel on CPU: the same update)
        make = self.optimizer or partial(torch.optim.AdamW, weight_decay=0.01, fused=fused_on_cpu(self.parameters()))
        opt = make(self.param_groups(), lr=hp.lr)
        if self.discriminator is None:
            return {"optimizer": opt, "lr_scheduler": cosine_schedule(opt, self.trainer, hp.lr, hp.min_lr, hp.warmup_steps)}
        # manual optimisation: max_steps counts both optimizers' steps; the schedules run over batches
        steps = self.trainer.max_steps // 2 if self.trainer.max_steps and self.trainer.max_steps > 0 else \
            total_optimizer_steps(self.trainer)
        batches = SimpleNamespace(max_steps=max(1, steps))
        opt_d = make(self.discriminator.parameters(), lr=hp.d_lr)
        sched = cosine_schedule(opt, batches, hp.lr, hp.min_lr, hp.warmup_steps)
        sched_d = cosine_schedule(opt_d, batches, hp.d_lr, hp.min_lr * hp.d_lr / hp.lr, hp.warmup_steps)
        return [opt, opt_d], [sched, sched_d]
