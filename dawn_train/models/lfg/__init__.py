"""DAWN stage 1: the latent flow generator (LFG), pure ``nn.Module``s whose state dicts match the official release.

Main entry point: ``LatentFlowGenerator`` (``encode`` / ``decode`` / ``reference_feature`` for later stages).
"""
from .bg_motion_predictor import BGMotionPredictor
from .blocks import (
                     AntiAliasInterpolation2d,
                     Decoder,
                     DownBlock2d,
                     Encoder,
                     Hourglass,
                     ResBlock2d,
                     SameBlock2d,
                     UpBlock2d,
                     make_coordinate_grid,
                     region_to_gaussian,
                     warp,
)
from .equivariance import RandomTransform
from .flow_autoencoder import LatentFlowGenerator
from .generator import Generator
from .losses import (
                     equivariance_affine_loss,
                     equivariance_shift_loss,
                     lfg_losses,
                     perceptual_loss,
                     pyramid_perceptual_loss,
)
from .pixelwise_flow_predictor import PixelwiseFlowPredictor
from .region_predictor import RegionPredictor, symmetric_eig2x2
from .vgg import ImagePyramid, Vgg19Features

__all__ = [
    "AntiAliasInterpolation2d", "BGMotionPredictor", "Decoder", "DownBlock2d", "Encoder", "Generator", "Hourglass",
    "ImagePyramid", "LatentFlowGenerator", "PixelwiseFlowPredictor", "RandomTransform", "RegionPredictor",
    "ResBlock2d", "SameBlock2d", "UpBlock2d", "Vgg19Features", "equivariance_affine_loss", "equivariance_shift_loss",
    "lfg_losses", "make_coordinate_grid", "perceptual_loss", "pyramid_perceptual_loss", "region_to_gaussian",
    "symmetric_eig2x2", "warp",
]
