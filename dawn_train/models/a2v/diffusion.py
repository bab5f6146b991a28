"""Gaussian diffusion around any noise-predicting denoiser (DAWN / LFDM ``GaussianDiffusion``).

The denoiser is called as ``denoise_fn(x, t, cond=cond, null_cond_mask=mask)`` with
x: (B, C + C_ctx, T, H, W) = [x_t | context repeated over frames], t: (B,) int64,
cond: (B, T, D) or None, mask: (B, T) bool (True = null condition); it returns (B, C, T, H, W).
A denoiser with ``takes_static_context = True`` is called with x_t alone and ``context=`` (B, C_ctx, H, W).
The 12 schedule buffers keep the official names (they are in the released checkpoint).
"""
from __future__ import annotations

from typing import Callable, Iterable, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .schedules import beta_schedule
from .unet3d import prob_mask_like

DDIMConvention = Literal["official", "standard"]
# What the denoiser outputs: "pred_noise" (eps, official DAWN) or "pred_x0" (the clean flow/occlusion itself; the
# loss is then the x0 error, and sampling converts the output to eps, so DDIM/DDPM code paths are unchanged).
Objective = Literal["pred_noise", "pred_x0"]


def extract(a: Tensor, t: Tensor, x_shape: Sequence[int]) -> Tensor:
    """a[t] reshaped to (B, 1, ..., 1) for broadcasting against x_shape."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


def batch_quantile(x: Tensor, q: float) -> Tensor:
    """Per-row quantile of x (B, N) with linear interpolation, equal to ``torch.quantile(x, q, dim=-1)``
    but built on ``kthvalue`` so it also works beyond torch.quantile's 16M-element limit."""
    n = x.shape[-1]
    rank = torch.tensor(q, dtype=x.dtype, device=x.device) * (n - 1)
    below = int(rank.floor().item())
    above = int(rank.ceil().item())
    v_below = x.kthvalue(below + 1, dim=-1).values
    v_above = v_below if above == below else x.kthvalue(above + 1, dim=-1).values
    return torch.lerp(v_below, v_above, rank - below)


class _NoiseSource:
    """Standard-normal draws for sampling: pre-drawn tensors first (parity replay), then ``randn``."""

    def __init__(self, pre: Optional[Sequence[Tensor]], generator: Optional[torch.Generator]):
        self.pre = list(pre) if pre is not None else []
        self.generator = generator

    def __call__(self, like: Tensor) -> Tensor:
        if self.pre:
            z = self.pre.pop(0)
            if z.shape != like.shape:
                raise ValueError(f"pre-drawn noise has shape {tuple(z.shape)}, expected {tuple(like.shape)}")
            return z.to(device=like.device, dtype=like.dtype)
        return torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)


class GaussianDiffusion(nn.Module):
    """DDPM training objective (eps-prediction, or x0-prediction with ``objective="pred_x0"``) and DDIM /
    ancestral sampling.

    ``ddim_convention="official"`` reproduces DAWN: grid ``reversed(int(linspace(0, T, S + 2)[:-1]))`` and
    ``a = alphas_cumprod_prev[t]``, ``a_next = alphas_cumprod_prev[t_next]`` (an off-by-one inherited
    from LFDM, while x0 uses ``alphas_cumprod[t]``).  ``"standard"`` is DDIM (arXiv 2010.02502) with grid
    ``reversed(int(linspace(-1, T - 1, S + 1)))``, ``a = alphas_cumprod[t]`` and ``a_next = 1`` at -1.
    """

    def __init__(
        self,
        denoise_fn: nn.Module,
        *,
        channels: int = 3,
        timesteps: int = 1000,
        beta_schedule_name: str = "cosine",
        sampling_timesteps: int = 20,
        ddim_sampling_eta: float = 1.0,
        ddim_convention: DDIMConvention = "official",
        loss_type: Literal["l1", "l2"] = "l2",
        use_dynamic_thres: bool = True,  # Imagen dynamic thresholding (arXiv 2205.11487)
        dynamic_thres_percentile: float = 0.9,
        null_cond_prob: float = 0.1,
        objective: Objective = "pred_noise",
    ):
        super().__init__()
        if objective not in ("pred_noise", "pred_x0"):
            raise ValueError(f"objective must be 'pred_noise' or 'pred_x0', got {objective!r}")
        if loss_type not in ("l1", "l2"):
            raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
        if ddim_convention not in ("official", "standard"):
            raise ValueError(f"ddim_convention must be 'official' or 'standard', got {ddim_convention!r}")
        self.denoise_fn = denoise_fn
        self.channels = channels
        self.loss_type = loss_type
        self.sampling_timesteps = sampling_timesteps
        self.ddim_sampling_eta = ddim_sampling_eta
        self.ddim_convention = ddim_convention
        self.use_dynamic_thres = use_dynamic_thres
        self.dynamic_thres_percentile = dynamic_thres_percentile
        self.null_cond_prob = null_cond_prob
        self.objective = objective

        betas = beta_schedule(beta_schedule_name, timesteps)  # float64; buffers are float32 casts
        self.num_timesteps = int(betas.shape[0])
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        buffers = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
            "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
            "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32))

    # ---- forward process and parameterisation ----------------------------------------------
    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps.  x_start, noise: (B, C, T, H, W); t: (B,)."""
        return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x0 = sqrt(1/ab_t) x_t - sqrt(1/ab_t - 1) eps.  x_t, noise: (B, C, T, H, W); t: (B,)."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise)

    def predict_noise_from_start(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (sqrt(1/ab_t) x_t - x0) / sqrt(1/ab_t - 1), the inverse of :meth:`predict_start_from_noise`.
        x_t, x0: (B, C, T, H, W); t: (B,)."""
        return ((extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x0)
                / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (B, C, T, H, W) and log-variance (B, 1, 1, 1, 1) of q(x_{t-1} | x_t, x0).  x_start, x_t:
        (B, C, T, H, W); t: (B,)."""
        mean = (extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        return mean, extract(self.posterior_log_variance_clipped, t, x_t.shape)

    def threshold(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """Dynamic thresholding: s = max(1, percentile of |x0| over all of (C, T, H, W) per sample),
        x0 <- clamp(x0, -s, s) / s.  Returns (thresholded x0, raw percentile (B,) before the clamp to 1);
        static clipping to [-1, 1] when dynamic thresholding is off."""
        if not self.use_dynamic_thres:
            return x0.clamp(-1.0, 1.0), torch.ones(x0.shape[0], dtype=x0.dtype, device=x0.device)
        raw = batch_quantile(x0.flatten(1).abs(), self.dynamic_thres_percentile)
        s = raw.clamp(min=1.0).view(-1, *((1,) * (x0.ndim - 1)))
        return x0.clamp(-s, s) / s, raw

    # ---- denoiser calls -----------------------------------------------------------------------
    @staticmethod
    def model_input(x: Tensor, context: Optional[Tensor]) -> Tensor:
        """Concatenate the static context (B, C_ctx, H, W) or (B, C_ctx, T, H, W) after x (B, C, T, H, W)."""
        if context is None:
            return x
        if context.ndim == 4:
            context = context[:, :, None].expand(-1, -1, x.shape[2], -1, -1)
        return torch.cat((x, context.to(x.dtype)), dim=1)

    def denoise(self, x: Tensor, t: Tensor, context: Optional[Tensor], cond: Optional[Tensor],
                null_cond_mask: Tensor) -> Tensor:
        """The denoiser on [x | context].  A denoiser with ``takes_static_context`` gets a per-clip context
        (B, C_ctx, H, W) apart, so it need not repeat it over frames (the UNet convolves it once per clip)."""
        if context is not None and context.ndim == 4 and getattr(self.denoise_fn, "takes_static_context", False):
            return self.denoise_fn(x, t, cond=cond, null_cond_mask=null_cond_mask, context=context)
        return self.denoise_fn(self.model_input(x, context), t, cond=cond, null_cond_mask=null_cond_mask)

    def predict_noise(self, x: Tensor, t: Tensor, context: Optional[Tensor] = None, cond: Optional[Tensor] = None,
                      cond_scale: float = 1.0, null_cond_mask: Optional[Tensor] = None) -> Tensor:
        """eps(x_t, t) (B, C, T, H, W); with cond_scale != 1, classifier-free guidance null + (cond - null) * scale
        (applied to the denoiser output, then converted to eps under ``objective="pred_x0"``).  x: (B, C, T, H, W);
        t: (B,); context: (B, C_ctx, H, W) or (B, C_ctx, T, H, W); cond: (B, T, D); null_cond_mask: (B, T) bool,
        True = null condition (default: none)."""
        b, _, f = x.shape[:3]
        if null_cond_mask is None:
            null_cond_mask = torch.zeros(b, f, dtype=torch.bool, device=x.device)
        out = self.denoise(x, t, context, cond, null_cond_mask)
        if cond_scale != 1 and cond is not None:
            null_out = self.denoise(x, t, context, cond, torch.ones_like(null_cond_mask))
            out = null_out + (out - null_out) * cond_scale
        return self.predict_noise_from_start(x, t, out) if self.objective == "pred_x0" else out

    # ---- training -----------------------------------------------------------------------------
    def p_losses(self, x_start: Tensor, t: Tensor, context: Optional[Tensor] = None, cond: Optional[Tensor] = None,
                 noise: Optional[Tensor] = None, null_cond_mask: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """One training evaluation.  x_start: (B, C, T, H, W), t: (B,).  Returns a dict with
        ``loss`` (B, C, T, H, W) *unreduced* error of the denoiser output (the noise, or x0 under
        ``objective="pred_x0"``), ``pred_noise``, ``x_noisy``, ``pred_x0`` (dynamic-thresholded x0 prediction,
        differentiable), ``null_cond_mask`` (B, T) and ``noise``."""
        b, _, f = x_start.shape[:3]
        if noise is None:
            noise = torch.randn(x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype)
        if null_cond_mask is None:
            null_cond_mask = prob_mask_like((b, f), self.null_cond_prob, device=x_start.device, generator=generator)
        x_noisy = self.q_sample(x_start, t, noise)
        pred = self.denoise(x_noisy, t, context, cond, null_cond_mask)
        target = x_start if self.objective == "pred_x0" else noise
        loss = (target - pred) ** 2 if self.loss_type == "l2" else (target - pred).abs()
        if self.objective == "pred_x0":
            pred_noise, pred_x0 = self.predict_noise_from_start(x_noisy, t, pred), pred
        else:
            pred_noise, pred_x0 = pred, self.predict_start_from_noise(x_noisy, t, pred)
        pred_x0, _ = self.threshold(pred_x0)
        return dict(loss=loss, pred_noise=pred_noise, x_noisy=x_noisy, pred_x0=pred_x0,
                    null_cond_mask=null_cond_mask, noise=noise)

    def forward(self, x_start: Tensor, context: Optional[Tensor] = None, cond: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, **kwargs) -> dict[str, Tensor]:
        """Draw t ~ U{0..T-1} per sample and evaluate :meth:`p_losses` (dict also holds ``t``)."""
        t = torch.randint(0, self.num_timesteps, (x_start.shape[0],), device=x_start.device, generator=generator)
        out = self.p_losses(x_start, t, context, cond, generator=generator, **kwargs)
        out["t"] = t
        return out

    # ---- sampling -----------------------------------------------------------------------------
    def ddim_timesteps(self, sampling_timesteps: Optional[int] = None,
                       convention: Optional[DDIMConvention] = None) -> list[int]:
        """Descending time grid (S + 1 entries); consecutive entries form the (t, t_next) pairs."""
        steps = sampling_timesteps or self.sampling_timesteps
        convention = convention or self.ddim_convention
        if convention == "official":
            grid = torch.linspace(0.0, self.num_timesteps, steps=steps + 2)[:-1]
        elif convention == "standard":
            grid = torch.linspace(-1.0, self.num_timesteps - 1, steps=steps + 1)
        else:
            raise ValueError(f"ddim_convention must be 'official' or 'standard', got {convention!r}")
        return list(reversed(grid.int().tolist()))

    def _ddim_alphas(self, t: int, t_next: int, convention: DDIMConvention) -> tuple[Tensor, Tensor]:
        table = self.alphas_cumprod_prev if convention == "official" else self.alphas_cumprod
        one = torch.ones((), dtype=table.dtype, device=table.device)
        return (table[t] if t >= 0 else one), (table[t_next] if t_next >= 0 else one)

    @torch.no_grad()
    def ddim_sample(
        self,
        shape: Sequence[int],
        context: Optional[Tensor] = None,
        cond: Optional[Tensor] = None,
        *,
        cond_scale: float = 1.0,
        eta: Optional[float] = None,
        sampling_timesteps: Optional[int] = None,
        convention: Optional[DDIMConvention] = None,
        noise: Optional[Sequence[Tensor]] = None,
        generator: Optional[torch.Generator] = None,
        clip_denoised: bool = True,
        progress: Optional[Callable[[Iterable], Iterable]] = None,
        callback: Optional[Callable[[dict], None]] = None,
    ) -> Tensor:
        """DDIM sampling of x0, shape (B, C, T, H, W), all T frames jointly (non-autoregressive).

        ``noise``: pre-drawn standard normals in draw order (x_T first, then one per step that adds
        noise) for exact replay; missing draws come from ``randn(generator=generator)``.
        ``progress`` wraps the step iterator (e.g. ``tqdm``); ``callback`` receives a dict per step
        (step, t, t_next, x_t, pred_noise, x0_raw, thresh, x0)."""
        eta = self.ddim_sampling_eta if eta is None else eta
        convention = convention or self.ddim_convention
        times = self.ddim_timesteps(sampling_timesteps, convention)
        pairs = list(zip(times[:-1], times[1:]))
        draw = _NoiseSource(noise, generator)
        dtype = context.dtype if context is not None else self.betas.dtype
        img = draw(torch.empty(tuple(shape), device=self.betas.device, dtype=dtype))
        b = shape[0]
        for step, (t, t_next) in enumerate(progress(pairs) if progress is not None else pairs):
            a, a_next = self._ddim_alphas(t, t_next, convention)
            t_vec = torch.full((b,), t, device=img.device, dtype=torch.long)
            pred_noise = self.predict_noise(img, t_vec, context, cond, cond_scale=cond_scale)
            x0_raw = self.predict_start_from_noise(img, t_vec, pred_noise)
            x0, thresh = self.threshold(x0_raw) if clip_denoised else (x0_raw, None)
            sigma = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
            c = ((1 - a_next) - sigma ** 2).clamp(min=0).sqrt()
            adds_noise = t_next > 0 if convention == "official" else t_next >= 0
            z = draw(img) if adds_noise else 0.0
            if callback is not None:
                callback(dict(step=step, t=t, t_next=t_next, x_t=img, pred_noise=pred_noise, x0_raw=x0_raw,
                              thresh=thresh, x0=x0))
            img = x0 * a_next.sqrt() + c * pred_noise + sigma * z
        return img

    @torch.no_grad()
    def p_sample_loop(self, shape: Sequence[int], context: Optional[Tensor] = None, cond: Optional[Tensor] = None,
                      *, cond_scale: float = 1.0, noise: Optional[Sequence[Tensor]] = None,
                      generator: Optional[torch.Generator] = None,
                      progress: Optional[Callable[[Iterable], Iterable]] = None) -> Tensor:
        """Ancestral DDPM sampling over all ``num_timesteps`` steps (slow; for reference).  shape: (B, C, T, H, W)
        of the sample returned; context: (B, C_ctx, H, W) or (B, C_ctx, T, H, W); cond: (B, T, D); noise: the
        Gaussian draws to use in order (the first of `shape`), instead of `generator`'s."""
        draw = _NoiseSource(noise, generator)
        dtype = context.dtype if context is not None else self.betas.dtype
        img = draw(torch.empty(tuple(shape), device=self.betas.device, dtype=dtype))
        steps = list(reversed(range(self.num_timesteps)))
        for t in progress(steps) if progress is not None else steps:
            t_vec = torch.full((shape[0],), t, device=img.device, dtype=torch.long)
            pred_noise = self.predict_noise(img, t_vec, context, cond, cond_scale=cond_scale)
            x0, _ = self.threshold(self.predict_start_from_noise(img, t_vec, pred_noise))
            mean, log_var = self.q_posterior(x0, img, t_vec)
            img = mean + ((0.5 * log_var).exp() * draw(img) if t > 0 else 0.0)
        return img

    def sample(self, context: Optional[Tensor], cond: Optional[Tensor], *, num_frames: Optional[int] = None,
               image_size: Optional[int] = None, batch_size: Optional[int] = None, **kwargs) -> Tensor:
        """Sample (B, channels, T, H, W): B and T from cond (B, T, D), H, W from context (B, C_ctx, H, W)
        (or ``image_size``).  DDIM when sampling_timesteps < num_timesteps, else ancestral."""
        if cond is not None:
            batch_size, num_frames = cond.shape[0], cond.shape[1]
        if context is not None:
            batch_size = context.shape[0]
            h, w = context.shape[-2:]
        else:
            h = w = image_size
        if batch_size is None or num_frames is None or h is None:
            raise ValueError("sample() needs cond (B, T, D) or batch_size/num_frames, and context or image_size")
        shape = (batch_size, self.channels, num_frames, h, w)
        steps = kwargs.get("sampling_timesteps") or self.sampling_timesteps  # the caller's count wins
        if steps < self.num_timesteps:
            return self.ddim_sample(shape, context, cond, **kwargs)
        ancestral = {k: v for k, v in kwargs.items() if k in ("cond_scale", "noise", "generator", "progress")}
        return self.p_sample_loop(shape, context, cond, **ancestral)
