"""A2V-FDM denoiser: the official DAWN ``Unet3D`` (``..._ca_multi*.py``) as a clean module.

Attribute names equal the release's state-dict keys under ``denoise_fn.``, so the official
``checkpoint['diffusion']`` loads strictly into :class:`~dawn_train.models.a2v.diffusion.GaussianDiffusion`
wrapping this UNet.  Differences from the official classes (no effect on weights or outputs):

* the number of frames comes from the input (no ``update_num_frames`` state);
* one module covers the training (full), banded and ``local_opt`` official variants through
  ``window_size`` / ``window_convention`` (see :mod:`.local_attention`), with O(T * w) memory;
  ``window_size`` is the sampling window (eval mode) and ``train_window_size`` the one used in train
  mode, None (full attention) by default: the official code trains without a window and applies it
  only when sampling (paper Table 5 is an inference-time ablation);
* ``learn_null_cond=True`` uses one learned per-frame vector (1, 1, cond_dim) instead of the
  official re-drawn random parameter; the null-condition mask can be passed in;
* optional gradient checkpointing and an SDPA attention backend;
* ``implementation="fast"`` (default) computes the same function faster: the per-clip context (reference feature
  and face location) is convolved once per clip instead of once per frame, the three condition cross-attentions of
  a block share one normalisation and one query matmul, and temporal attention is banded and (without grad) runs
  a few thousand pixels at a time, so memory grows linearly in T.  ``"reference"`` is the official computation
  (context repeated over frames, per-module cross-attention, masked full temporal attention), kept to measure
  the speed-ups against and to test that both agree.
"""
from __future__ import annotations

import contextlib
from types import MappingProxyType
from typing import Iterator, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .attention import (
    PreNorm,
    RelativePositionBias,
    Residual,
    RotaryEmbedding,
    SpatialAttention,
    SpatialLinearAttention,
    TemporalAttention,
)
from .blocks import Downsample, ResnetBlock, SinusoidalPosEmb, Upsample
from .conv import Conv3d
from .local_attention import AttnBackend, WindowConvention, half_width

Implementation = Literal["fast", "reference"]
# Working set (projections + scores) of one pixel chunk of temporal attention, or frame chunk of spatial linear
# attention, without grad, in MiB by device type.  On a CPU small chunks stay in cache; on a GPU each chunk costs
# launches, and an H200 ran the release UNet's no-grad call 1.56x (T=200) to 1.92x (T=600) faster at 512 than at 128
# MiB, still at 0.38x (T=200) and 0.08x (T=600) the reference path's peak memory (docs/performance.md).
ATTN_CHUNK_MIB = MappingProxyType({"cpu": 128, "cuda": 512})  # read-only: set `attn_chunk_mib` per model instead
DEFAULT_ATTN_CHUNK_MIB = 128  # other devices


def prob_mask_like(shape: Sequence[int], prob: float, device=None, generator: Optional[torch.Generator] = None
                   ) -> Tensor:
    """Bool mask, True with probability ``prob`` (exactly all/none for prob 1/0)."""
    if prob >= 1:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if prob <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    return torch.rand(shape, device=device, generator=generator) < prob


class Unet3D(nn.Module):
    """Noise-prediction 3D UNet for latent flow sequences.

    Input x: (B, channels, T, H, W) = [noisy x_t (3) | reference feature (256) | face location (16)];
    time: (B,) diffusion step; cond: (B, T, cond_aud + cond_pose + cond_eye) per-frame
    [audio | pose delta | eye delta].  Output (B, out_grid_dim + out_conf_dim, T, H, W) = predicted
    noise (flow channels from ``final_conv``, occlusion channel from ``occlusion_map``).
    H and W must be divisible by 2 ** (len(dim_mults) - 1).
    """

    def __init__(
        self,
        dim: int = 64,
        *,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        channels: int = 3 + 256 + 16,
        cond_aud: int = 1024,
        cond_pose: int = 6,
        cond_eye: int = 2,
        out_grid_dim: int = 2,
        out_conf_dim: int = 1,
        attn_heads: int = 8,
        attn_dim_head: int = 32,
        init_dim: Optional[int] = None,
        init_kernel_size: int = 7,
        use_sparse_linear_attn: bool = True,
        resnet_groups: int = 8,
        use_final_activation: bool = False,
        learn_null_cond: bool = False,
        use_deconv: bool = True,
        padding_mode: str = "zeros",
        rel_pos_buckets: int = 32,
        rel_pos_max_distance: int = 32,  # official: only ~27 frames are resolved, beyond saturates
        window_size: Optional[int] = None,
        train_window_size: Optional[int] = None,
        window_convention: WindowConvention = "total",
        attn_block_size: Optional[int] = None,
        attn_backend: AttnBackend = "math",
        cross_attn_norm_eps: Optional[float] = None,  # None = official (1e-5 fp32, 1e-3 otherwise)
        use_checkpoint: bool = False,
        implementation: Implementation = "fast",
        attn_chunk_mib: Optional[float] = None,  # None = by device (ATTN_CHUNK_MIB)
    ):
        super().__init__()
        if implementation not in ("fast", "reference"):
            raise ValueError(f"implementation must be 'fast' or 'reference', got {implementation!r}")
        self.implementation = implementation
        self.attn_heads, self.attn_hidden = attn_heads, attn_heads * attn_dim_head
        if init_kernel_size % 2 != 1:
            raise ValueError(f"init_kernel_size must be odd, got {init_kernel_size}")
        half_width(window_size, window_convention)  # validate early
        half_width(train_window_size, window_convention)
        self.channels = channels
        self.cond_dim = cond_aud + cond_pose + cond_eye
        self.window_size = window_size
        self.train_window_size = train_window_size
        self.window_convention = window_convention
        self.attn_block_size = attn_block_size
        self.attn_backend = attn_backend
        self.use_checkpoint = use_checkpoint
        if attn_chunk_mib is not None and not attn_chunk_mib > 0:
            raise ValueError(f"attn_chunk_mib must be > 0 (MiB) or None (by device), got {attn_chunk_mib}")
        self.attn_chunk_mib = attn_chunk_mib

        rotary_emb = RotaryEmbedding(min(32, attn_dim_head))  # shared by every temporal attention

        def temporal_attn(d: int) -> nn.Module:
            return Residual(PreNorm(d, TemporalAttention(d, attn_heads, attn_dim_head, rotary_emb)))

        self.time_rel_pos_bias = RelativePositionBias(heads=attn_heads, num_buckets=rel_pos_buckets,
                                                      max_distance=rel_pos_max_distance)

        init_dim = init_dim or dim
        pad = init_kernel_size // 2
        self.init_conv = Conv3d(channels, init_dim, (1, init_kernel_size, init_kernel_size), padding=(0, pad, pad))
        self.init_temporal_attn = temporal_attn(init_dim)

        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        time_dim = dim * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))

        self.learn_null_cond = learn_null_cond
        if learn_null_cond:
            self.null_cond_emb = nn.Parameter(torch.randn(1, 1, self.cond_dim))

        def block(d_in: int, d_out: int, conditioned: bool = True) -> ResnetBlock:
            cond_kw = dict(time_emb_dim=time_dim, audio_emb_dim=cond_aud, pose_emb_dim=cond_pose,
                           eye_emb_dim=cond_eye) if conditioned else {}
            return ResnetBlock(d_in, d_out, groups=resnet_groups, norm_eps=cross_attn_norm_eps, **cond_kw)

        def spatial_linear(d: int) -> nn.Module:
            if not use_sparse_linear_attn:
                return nn.Identity()
            return Residual(PreNorm(d, SpatialLinearAttention(d, heads=attn_heads)))

        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        n_res = len(in_out)
        for ind, (d_in, d_out) in enumerate(in_out):
            is_last = ind >= n_res - 1
            self.downs.append(nn.ModuleList([
                block(d_in, d_out), block(d_out, d_out), spatial_linear(d_out), temporal_attn(d_out),
                nn.Identity() if is_last else Downsample(d_out),
            ]))

        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_spatial_attn = Residual(PreNorm(mid, SpatialAttention(mid, heads=attn_heads)))
        self.mid_temporal_attn = temporal_attn(mid)
        self.mid_block2 = block(mid, mid)

        for ind, (d_in, d_out) in enumerate(reversed(in_out)):
            is_last = ind >= n_res - 1
            self.ups.append(nn.ModuleList([
                block(d_out * 2, d_in), block(d_in, d_in), spatial_linear(d_in), temporal_attn(d_in),
                nn.Identity() if is_last else Upsample(d_in, use_deconv, padding_mode),
            ]))

        self.final_conv = nn.Sequential(block(dim * 2, dim, conditioned=False), Conv3d(dim, out_grid_dim, 1))
        self.final_activation = nn.Tanh() if use_final_activation else nn.Identity()
        self.occlusion_map = nn.Sequential(block(dim * 2, dim, conditioned=False), Conv3d(dim, out_conf_dim, 1))

    # ------------------------------------------------------------------------------------------
    def half_width(self) -> Optional[int]:
        """Frames attended on each side in temporal attention (None = all): the training window in train
        mode, the sampling window in eval mode (validation, generation)."""
        window = self.train_window_size if self.training else self.window_size
        return half_width(window, self.window_convention)

    @property
    def takes_static_context(self) -> bool:
        """Whether ``forward`` may get the per-clip context apart (``context=``), see :meth:`stem`."""
        return self.implementation == "fast"

    def stem(self, x: Tensor, context: Optional[Tensor]) -> Tensor:
        """``init_conv`` of [x | context repeated over frames] without the repeat: the convolution is linear and
        acts per frame, so the context part (272 of 275 input channels) is convolved once per clip.
        x: (B, C_x, T, H, W), context: (B, channels - C_x, H, W) or None -> (B, init_dim, T, H, W)."""
        conv = self.init_conv
        if context is None:
            return conv(x)
        c_x = x.shape[1]
        if c_x + context.shape[1] != self.channels:
            raise ValueError(f"x ({c_x} channels) + context ({context.shape[1]}) must have {self.channels} channels")
        frames = F.conv3d(x, conv.weight[:, :c_x], None, padding=conv.padding)
        clip = F.conv2d(context.to(x.dtype), conv.weight[:, c_x:, 0], conv.bias, padding=conv.padding[1:])
        return frames + clip[:, :, None]

    def chunk_bytes(self, device_type: str) -> int:
        """The no-grad working set of one attention chunk on a device of that type (``attn_chunk_mib``)."""
        mib = self.attn_chunk_mib or ATTN_CHUNK_MIB.get(device_type, DEFAULT_ATTN_CHUNK_MIB)
        return int(mib * 2**20)

    @contextlib.contextmanager
    def chunks_sized_for(self, device_type: str) -> Iterator[None]:
        """Within: the no-grad chunks sized for a device of that type whatever device the UNet is on (a trace on the
        meta device that stands for a CUDA or CPU run, :mod:`dawn_train.inference.memory`)."""
        saved = self.attn_chunk_mib
        self.attn_chunk_mib = self.chunk_bytes(device_type) / 2**20
        try:
            yield
        finally:
            self.attn_chunk_mib = saved

    def position_chunk(self, frames: int, half: Optional[int], itemsize: int, device_type: str) -> Optional[int]:
        """Pixels per temporal-attention call (fast path, no grad): projections and scores within
        :meth:`chunk_bytes`.  None = all at once (training keeps every activation for backward anyway)."""
        if self.implementation != "fast" or torch.is_grad_enabled():
            return None
        keys = frames if half is None else min(frames, (self.attn_block_size or max(half, 1)) + 2 * half)
        per_pixel = itemsize * frames * (self.attn_heads * keys + 4 * self.attn_hidden)
        return max(1, self.chunk_bytes(device_type) // per_pixel)

    def split_qkv(self, x: Tensor) -> bool:
        """Whether the attentions project q, k and v apart in training (``attention.split_projection``): on a CPU the
        fast path's train step gains 1.15-1.3x from it; on an H200 the step was ~12 % slower (three smaller GEMMs)."""
        return self.implementation == "fast" and x.device.type == "cpu"

    def spatial_kwargs(self, spatial_attn: nn.Module, x: Tensor) -> dict:
        """The keyword arguments of a spatial attention call on x (B, C, T, H, W): its frame chunk and whether it
        projects q, k and v apart; none for a level without spatial attention."""
        if isinstance(spatial_attn, nn.Identity):
            return {}
        return dict(frame_chunk=self.frame_chunk(x.shape[-2] * x.shape[-1], x.element_size(), x.device.type),
                    split_qkv=self.split_qkv(x))

    def frame_chunk(self, pixels: int, itemsize: int, device_type: str) -> Optional[int]:
        """Frames per spatial linear-attention call (fast path, no grad), as :meth:`position_chunk`."""
        if self.implementation != "fast" or torch.is_grad_enabled():
            return None
        return max(1, self.chunk_bytes(device_type) // (itemsize * pixels * 8 * self.attn_hidden))

    def _run(self, fn: nn.Module, *args, **kwargs) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return fn(*args, **kwargs)

    def _temporal(self, attn: nn.Module, x: Tensor, **kwargs) -> Tensor:
        """A ``Residual(PreNorm(TemporalAttention))`` block; the fast path normalises inside the attention's
        layout change (``TemporalAttention(norm=...)``)."""
        if self.implementation != "fast":
            return self._run(attn, x, **kwargs)
        prenorm = attn.fn
        return self._run(prenorm.fn, x, norm=prenorm.norm, **kwargs) + x

    def apply_null_cond(self, cond: Tensor, null_cond_mask: Tensor) -> Tensor:
        """Replace the conditions of masked frames.  cond: (B, T, D), mask: (B, T) bool."""
        null = self.null_cond_emb.to(cond.dtype) if self.learn_null_cond else cond.new_zeros(1, 1, cond.shape[-1])
        return torch.where(null_cond_mask[..., None], null, cond)

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        cond: Optional[Tensor] = None,
        null_cond_prob: float = 0.0,
        null_cond_mask: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        context: Optional[Tensor] = None,
    ) -> Tensor:
        """x: (B, C, T, H, W) (or x_t alone with the per-clip ``context`` (B, C_ctx, H, W), see :meth:`stem`);
        time: (B,); cond: (B, T, D) or None (= null condition for every frame);
        null_cond_mask: (B, T) bool, True = frame gets the null condition (drawn with
        ``null_cond_prob`` when not given).  Returns (B, out_grid_dim + out_conf_dim, T, H, W).

        Computes in the dtype of its weights (a strategy may have cast them, e.g. DeepSpeed bf16): inputs are
        cast to it, and the step embedding is taken from the exact float32 step numbers first."""
        b, _, t, _, _ = x.shape
        dtype = self.init_conv.weight.dtype
        x = x.to(dtype)
        context = context.to(dtype) if context is not None else None
        cond = cond.to(dtype) if cond is not None else None
        if cond is None:
            cond = x.new_zeros(b, t, self.cond_dim)
            null_cond_mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
        if cond.shape != (b, t, self.cond_dim):
            raise ValueError(f"cond must have shape {(b, t, self.cond_dim)} (B, T, D), got {tuple(cond.shape)}")
        if null_cond_mask is None:
            null_cond_mask = prob_mask_like((b, t), null_cond_prob, device=x.device, generator=generator)
        cond = self.apply_null_cond(cond, null_cond_mask)

        fast = self.implementation == "fast"
        half = self.half_width()
        chunk = self.position_chunk(t, half, x.element_size(), x.device.type)
        tkw = dict(pos_bias=self.time_rel_pos_bias, half=half, block_size=self.attn_block_size,
                   backend=self.attn_backend, masked=not fast, position_chunk=chunk, split_qkv=self.split_qkv(x))
        x = self.stem(x, context)
        r = x.clone()
        x = self._temporal(self.init_temporal_attn, x, **tkw)
        temb = self.time_mlp[1:](self.time_mlp[0](time.float()).to(dtype))  # sinusoids of exact steps

        skips = []
        for block1, block2, spatial_attn, temporal_attn, downsample in self.downs:
            x = self._run(block1, x, temb, cond, fused=fast)
            x = self._run(block2, x, temb, cond, fused=fast)
            x = self._run(spatial_attn, x, **self.spatial_kwargs(spatial_attn, x))
            x = self._temporal(temporal_attn, x, **tkw)
            skips.append(x)
            x = downsample(x)

        x = self._run(self.mid_block1, x, temb, cond, fused=fast)
        x = self._run(self.mid_spatial_attn, x, backend=self.attn_backend)
        x = self._temporal(self.mid_temporal_attn, x, **tkw)
        x = self._run(self.mid_block2, x, temb, cond, fused=fast)

        for block1, block2, spatial_attn, temporal_attn, upsample in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = self._run(block1, x, temb, cond, fused=fast)
            x = self._run(block2, x, temb, cond, fused=fast)
            x = self._run(spatial_attn, x, **self.spatial_kwargs(spatial_attn, x))
            x = self._temporal(temporal_attn, x, **tkw)
            x = upsample(x)

        x = torch.cat((x, r), dim=1)
        flow = self.final_activation(self._run(self.final_conv, x))
        return torch.cat((flow, self._run(self.occlusion_map, x)), dim=1)

    def forward_with_cond_scale(self, x: Tensor, time: Tensor, cond: Optional[Tensor] = None,
                                cond_scale: float = 1.0) -> Tensor:
        """Classifier-free guidance: null + (cond - null) * cond_scale (one call when scale == 1).  x: (B, C_in, T,
        H, W); time: (B,); cond: (B, T, D); returns (B, C_out, T, H, W) as :meth:`forward`."""
        logits = self.forward(x, time, cond, null_cond_prob=0.0)
        if cond_scale == 1 or cond is None:
            return logits
        null_logits = self.forward(x, time, cond, null_cond_prob=1.0)
        return null_logits + (logits - null_logits) * cond_scale
