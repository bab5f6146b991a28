"""A2V-FDM: audio-to-video flow diffusion (3D UNet denoiser, Gaussian diffusion + DDIM,
face-location encoder), weight-compatible with the official DAWN release."""
from .diffusion import GaussianDiffusion, batch_quantile
from .face_location import FaceLocationEncoder, bbox_mask, official_face_loc_state_dict
from .local_attention import band_mask, half_width, windowed_attention
from .model import A2VFDM, build_a2v
from .schedules import beta_schedule, cosine_beta_schedule, linear_beta_schedule
from .unet3d import Unet3D

__all__ = [
    "A2VFDM", "FaceLocationEncoder", "build_a2v", "GaussianDiffusion", "Unet3D", "band_mask", "batch_quantile",
    "beta_schedule", "bbox_mask", "cosine_beta_schedule", "half_width", "linear_beta_schedule",
    "official_face_loc_state_dict", "windowed_attention",
]
