"""A2V-FDM as one module: diffusion (+ UNet denoiser) and the face-location encoder.

State dict = ``diffusion.*`` (exactly the official ``checkpoint['diffusion']`` layout) +
``face_loc_emb.*`` (absent from the official release: regenerate it with
:func:`~dawn_train.models.a2v.face_location.official_face_loc_state_dict` when converting).
The frozen LFG that produces the reference feature and the flow targets lives outside this module.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn

from .diffusion import DDIMConvention, GaussianDiffusion, Objective
from .face_location import FaceLocationEncoder, bbox_mask
from .local_attention import AttnBackend, WindowConvention
from .unet3d import Implementation, Unet3D

FACE_LOC_CHANNELS = 16  # Face_loc_Encoder output channels (official)


class A2VFDM(nn.Module):
    """Audio-to-video flow diffusion model.

    ref_fea: (B, 256, h, w) LFG bottleneck feature of the reference frame; box: (B, 6) face box of the
    reference frame ([x_min, x_max, y_min, y_max, H, W], see :func:`bbox_mask`); cond: (B, T, D) per-frame
    [audio | pose - pose_ref | eye - eye_ref]; x_start: (B, 3, T, h, w) = [flow x, flow y, 2*occlusion - 1].
    The face mask is drawn at the frame resolution R = ``mask_scale`` * h and encoded down to h.
    """

    def __init__(self, diffusion: GaussianDiffusion, face_loc_emb: Optional[FaceLocationEncoder] = None,
                 mask_scale: int = 4):
        super().__init__()
        self.diffusion = diffusion
        self.face_loc_emb = face_loc_emb if face_loc_emb is not None else FaceLocationEncoder()
        self.mask_scale = mask_scale

    @property
    def unet(self) -> nn.Module:
        return self.diffusion.denoise_fn

    def face_location(self, box: Tensor, latent_size: int) -> Tensor:
        """box (B, 6) -> face-location feature (B, 16, latent_size, latent_size)."""
        mask = bbox_mask(box, latent_size * self.mask_scale).to(self.face_loc_emb.conv1.weight.dtype)
        return self.face_loc_emb(mask)

    def context(self, ref_fea: Tensor, box: Tensor) -> Tensor:
        """UNet context (B, 256 + 16, h, w) = [reference feature | face location]."""
        face = self.face_location(box, ref_fea.shape[-1])
        return torch.cat((ref_fea, face.to(ref_fea.dtype)), dim=1)

    def forward(self, x_start: Tensor, ref_fea: Tensor, box: Tensor, cond: Tensor, **kwargs) -> dict[str, Tensor]:
        """Training evaluation; see :meth:`GaussianDiffusion.p_losses` for the returned dict
        (``loss`` is unreduced (B, 3, T, h, w) so the stage can add the mouth-region term)."""
        return self.diffusion(x_start, self.context(ref_fea, box), cond, **kwargs)

    @torch.no_grad()
    def sample(self, ref_fea: Tensor, box: Tensor, cond: Tensor, **kwargs) -> Tensor:
        """Generate x0 (B, 3, T, h, w) for T = cond.shape[1] frames in one pass."""
        return self.diffusion.sample(self.context(ref_fea, box), cond, **kwargs)


def build_a2v(
    *,
    dim: int = 64,
    dim_mults: tuple[int, ...] = (1, 2, 4, 8),
    ref_channels: int = 256,
    cond_aud: int = 1024,
    cond_pose: int = 6,
    cond_eye: int = 2,
    attn_heads: int = 8,
    attn_dim_head: int = 32,
    init_kernel_size: int = 7,
    resnet_groups: int = 8,
    use_sparse_linear_attn: bool = True,
    window_size: Optional[int] = 80,  # sampling; paper count ("total"): +-40 frames = official win_width 40
    train_window_size: Optional[int] = None,  # training: the official code trains with full attention
    window_convention: WindowConvention = "total",
    attn_block_size: Optional[int] = None,
    attn_backend: AttnBackend = "math",
    use_checkpoint: bool = False,
    implementation: Implementation = "fast",
    attn_chunk_mib: Optional[float] = None,
    timesteps: int = 1000,
    beta_schedule_name: str = "cosine",
    sampling_timesteps: int = 20,
    ddim_sampling_eta: float = 1.0,
    ddim_convention: DDIMConvention = "official",
    loss_type: Literal["l1", "l2"] = "l2",
    use_dynamic_thres: bool = True,
    dynamic_thres_percentile: float = 0.9,
    null_cond_prob: float = 0.1,
    mask_scale: int = 4,
    objective: Objective = "pred_noise",
) -> A2VFDM:
    """A2V-FDM from flat arguments (the YAML ``class_path`` of every A2V config).

    Defaults = the official release (``DAWN_128.pth`` / ``DAWN_256.pth``): UNet dim 64, mults (1, 2, 4, 8),
    input 3 + 256 (LFG reference feature, ``ref_channels``) + 16 (face location) channels, HuBERT
    ``cond_aud`` 1024 + pose 6 + eye 2, cosine schedule over 1000 steps, DDIM 20 steps with eta 1 and the
    official grid, and the inference window of the release config (``win_width: 40`` per side = 80 in the
    paper's count).  ``window_size`` is the sampling window (eval mode: validation samples, generation,
    eval), ``train_window_size`` the training one (train mode), by default none as in the release, whose
    training UNet attends over the whole clip.  None = full temporal attention.  ``objective="pred_x0"`` makes the UNet
    predict the clean flow/occlusion instead of the noise (not the release; learns far faster on small budgets).
    ``implementation``: "fast" or "reference" (the official computation, same function; see :class:`Unet3D`).
    ``attn_chunk_mib``: the fast path's no-grad attention working set per chunk (None = by device: 128 MiB on a CPU,
    512 MiB on CUDA); larger is fewer, bigger kernels for more peak memory."""
    unet = Unet3D(
        dim, dim_mults=tuple(dim_mults), channels=3 + ref_channels + FACE_LOC_CHANNELS, cond_aud=cond_aud,
        cond_pose=cond_pose, cond_eye=cond_eye, attn_heads=attn_heads, attn_dim_head=attn_dim_head,
        init_kernel_size=init_kernel_size, resnet_groups=resnet_groups, use_sparse_linear_attn=use_sparse_linear_attn,
        window_size=window_size, train_window_size=train_window_size, window_convention=window_convention,
        attn_block_size=attn_block_size, attn_backend=attn_backend, use_checkpoint=use_checkpoint,
        implementation=implementation, attn_chunk_mib=attn_chunk_mib)
    diffusion = GaussianDiffusion(
        unet, channels=3, timesteps=timesteps, beta_schedule_name=beta_schedule_name,
        sampling_timesteps=sampling_timesteps, ddim_sampling_eta=ddim_sampling_eta, ddim_convention=ddim_convention,
        loss_type=loss_type, use_dynamic_thres=use_dynamic_thres, dynamic_thres_percentile=dynamic_thres_percentile,
        null_cond_prob=null_cond_prob, objective=objective)
    return A2VFDM(diffusion, FaceLocationEncoder(out_channels=FACE_LOC_CHANNELS), mask_scale=mask_scale)
