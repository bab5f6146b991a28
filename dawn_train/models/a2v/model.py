"""A2V-FDM as one module: diffusion (+ UNet denoiser) and the face-location encoder.

State dict = ``diffusion.*`` (exactly the official ``checkpoint['diffusion']`` layout) +
``face_loc_emb.*`` (absent from the official release: regenerate it with
:func:`~dawn_train.models.a2v.face_location.official_face_loc_state_dict` when converting).
The frozen LFG that produces the reference feature and the flow targets lives outside this module.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .diffusion import GaussianDiffusion
from .face_location import FaceLocationEncoder, bbox_mask


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
