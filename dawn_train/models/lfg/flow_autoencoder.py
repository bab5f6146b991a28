"""The LFG (latent flow generator) as one module: region predictor + background predictor + generator.

Holds the three official sub-modules under their official names, so the official checkpoint
``{'generator': sd, 'region_predictor': sd, 'bg_predictor': sd}`` loads into ``model.generator`` etc. with
``strict=True`` and no renaming (equivalently, ``model.load_state_dict({f"{g}.{k}": v ...})``).
Official counterpart: ``LFG/modules/flow_autoenc.py:FlowAE`` (minus its global state and ``.cuda()`` calls).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch
import yaml
from einops import rearrange, repeat
from torch import Tensor, nn

from .bg_motion_predictor import BGMotionPredictor
from .generator import Generator
from .pixelwise_flow_predictor import PixelwiseFlowPredictor
from .region_predictor import RegionPredictor

# DAWN release config (config/hdtf128.yaml; hdtf256 differs only in frame_shape), sub-dicts of `model_params`.
# Read-only views: they are defaults, never state.
HDTF_REGION_PREDICTOR_PARAMS = MappingProxyType(dict(
    temperature=0.1, block_expansion=32, max_features=1024, scale_factor=0.25, num_blocks=5, pca_based=True,
    fast_svd=False))
HDTF_BG_PREDICTOR_PARAMS = MappingProxyType(dict(block_expansion=32, max_features=1024, num_blocks=5, bg_type="affine"))
HDTF_PIXELWISE_FLOW_PREDICTOR_PARAMS = MappingProxyType(dict(
    block_expansion=64, max_features=1024, num_blocks=5, scale_factor=0.25, use_deformed_source=True,
    use_covar_heatmap=True, estimate_occlusion_map=True))
HDTF_GENERATOR_PARAMS = MappingProxyType(dict(
    block_expansion=64, max_features=512, num_down_blocks=2, num_bottleneck_blocks=6, skips=True,
    pixelwise_flow_predictor_params=HDTF_PIXELWISE_FLOW_PREDICTOR_PARAMS))


# set once at the top level of model_params and passed down, so not accepted inside the sub-dicts
_TOP_LEVEL_KEYS = {"num_regions", "num_channels", "estimate_affine", "revert_axis_swap"}


def _merge(name: str, defaults, overrides: dict | None, cls: type) -> dict[str, Any]:
    """Defaults updated by the user's dict; an unknown key raises instead of being silently ignored.

    A number or flag given as text (``--model...region_predictor_params.scale_factor 0.5`` on the command line
    arrives as the string "0.5", since the dict's values are untyped) is read as YAML, so that it is the number, and
    text that is no number or flag raises here, naming the key, instead of a TypeError deep inside a module."""
    parameters = inspect.signature(cls).parameters
    known = set(parameters) - _TOP_LEVEL_KEYS
    merged = {**defaults, **(overrides or {})}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown} for {cls.__name__}; valid: {sorted(known)}")
    for key, value in merged.items():
        default = defaults.get(key, parameters[key].default)
        if isinstance(value, str) and isinstance(default, (bool, int, float)):
            try:
                number = yaml.safe_load(value)
            except yaml.YAMLError:
                number = None
            if not isinstance(number, (bool, int, float)) or isinstance(number, bool) != isinstance(default, bool):
                raise ValueError(f"{name}.{key}: expected {type(default).__name__} like {default!r}, got {value!r}")
            merged[key] = number
    return merged


class LatentFlowGenerator(nn.Module):
    """DAWN stage-1 model. Images are float (B, 3, H, W) in [0, 1]; flows are at (h, w) = (H, W) / 4.

    The constructor mirrors the official ``model_params`` section of ``config/hdtf128.yaml``: top-level
    ``num_regions``, ``num_channels``, ``estimate_affine``, ``revert_axis_swap`` and three dicts whose keys are the
    official ones (``generator_params`` may hold ``pixelwise_flow_predictor_params``). A dict only needs the keys that
    differ from the DAWN release values; ``None`` means all release values (66.0 M parameters at K=10).
    """

    def __init__(
        self,
        num_regions: int = 10,
        num_channels: int = 3,
        estimate_affine: bool = True,
        revert_axis_swap: bool = True,
        region_predictor_params: dict | None = None,
        bg_predictor_params: dict | None = None,
        generator_params: dict | None = None,
    ):
        super().__init__()
        rp = _merge("region_predictor_params", HDTF_REGION_PREDICTOR_PARAMS, region_predictor_params, RegionPredictor)
        bp = _merge("bg_predictor_params", HDTF_BG_PREDICTOR_PARAMS, bg_predictor_params, BGMotionPredictor)
        gp = _merge("generator_params", HDTF_GENERATOR_PARAMS, generator_params, Generator)
        if gp.get("pixelwise_flow_predictor_params") is not None:
            # nested dict: fill the flow predictor's missing keys from the release config as well
            gp["pixelwise_flow_predictor_params"] = _merge(
                "generator_params.pixelwise_flow_predictor_params", HDTF_PIXELWISE_FLOW_PREDICTOR_PARAMS,
                gp["pixelwise_flow_predictor_params"], PixelwiseFlowPredictor)
        self.generator = Generator(num_regions=num_regions, num_channels=num_channels,
                                   revert_axis_swap=revert_axis_swap, **gp)
        self.region_predictor = RegionPredictor(num_regions=num_regions, num_channels=num_channels,
                                                estimate_affine=estimate_affine, **rp)
        self.bg_predictor = BGMotionPredictor(num_channels=num_channels, **bp)
        self.num_regions = num_regions
        self.revert_axis_swap = revert_axis_swap

    @classmethod
    def from_official_config(cls, model_params: dict) -> "LatentFlowGenerator":
        """Build from the ``model_params`` dict of an official LFG YAML (the unused ``avd_network_params`` is
        dropped: DAWN never trains or saves that network)."""
        return cls(**{k: v for k, v in model_params.items() if k != "avd_network_params"})

    def forward(self, source: Tensor, driving: Tensor, occlusion_mask: Tensor | None = None) -> dict[str, Any]:
        """Reconstruct ``driving`` from ``source``. source, driving: (B, 3, H, W) in [0, 1]; occlusion_mask: see
        ``Generator.forward`` (training only).

        Returns the generator dict — ``prediction`` (B, 3, H, W), ``decoded`` (B, 3, H, W) (the decoder's image
        before its blend with the warped source), ``deformed`` (B, 3, H, W), ``optical_flow``
        (B, h, w, 2), ``occlusion_map`` (B, 1, h, w), ``bottle_neck_feat`` (B, 256, h, w) — plus
        ``source_region_params`` / ``driving_region_params`` (dicts, see ``RegionPredictor.forward``) and
        ``bg_params`` (B, 3, 3).
        """
        source_params = self.region_predictor(source)
        driving_params = self.region_predictor(driving)
        bg_params = self.bg_predictor(source, driving)
        out = self.generator(source, driving_region_params=driving_params, source_region_params=source_params,
                             bg_params=bg_params, occlusion_mask=occlusion_mask)
        out.update(source_region_params=source_params, driving_region_params=driving_params, bg_params=bg_params)
        return out

    # -- what later stages call ------------------------------------------------------------------------------------

    def encode(self, source: Tensor, driving: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
        """Latent motion of ``driving`` w.r.t. ``source``.

        source (B, 3, H, W); driving (B, 3, H, W) or (B, T, 3, H, W) (time is folded into the batch).
        Returns flow (B, h, w, 2) / (B, T, h, w, 2), an absolute grid_sample grid in [-1, 1] with last dim (x, y), and
        occlusion (B, 1, h, w) / (B, T, 1, h, w) in (0, 1). ``chunk_size`` bounds how many frames run at once.
        Call in eval mode (BatchNorm running stats), normally under ``torch.no_grad()``.
        """
        if driving.ndim == 4:
            return self._encode_frames(source, driving)
        b, t = driving.shape[:2]
        source_params = self.region_predictor(source)
        frames = rearrange(driving, "b t c h w -> (b t) c h w")
        sources = repeat(source, "b c h w -> (b t) c h w", t=t)
        params = {k: repeat(v, "b ... -> (b t) ...", t=t) for k, v in source_params.items() if k != "heatmap"}
        flow, occlusion = _chunked(self._encode_frames, chunk_size, sources, frames, params)
        return (rearrange(flow, "(b t) h w c -> b t h w c", b=b),
                rearrange(occlusion, "(b t) c h w -> b t c h w", b=b))

    def _encode_frames(self, source: Tensor, driving: Tensor,
                       source_params: dict | None = None) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) pairs -> flow (B, h, w, 2), occlusion (B, 1, h, w)."""
        if source_params is None:
            source_params = self.region_predictor(source)
        driving_params = self.region_predictor(driving)
        bg_params = self.bg_predictor(source, driving)
        motion = self.generator.pixelwise_flow_predictor(source, driving_params, source_params, bg_params=bg_params)
        flow = motion["optical_flow"]
        # Without an occlusion head the generator blends nothing, which is exactly what an all-ones map does.
        occlusion = motion.get("occlusion_map")
        if occlusion is None:
            occlusion = flow.new_ones(flow.shape[0], 1, *flow.shape[1:3])
        return flow, occlusion

    def decode(self, source: Tensor, flow: Tensor, occlusion: Tensor, chunk_size: int | None = None) -> Tensor:
        """Render frames from the source and a latent motion (the generator's ``forward_with_flow``).

        source (B, 3, H, W); flow (B, h, w, 2) and occlusion (B, 1, h, w), or (B, T, h, w, 2) and (B, T, 1, h, w).
        Returns (B, 3, H, W) or (B, T, 3, H, W) in [0, 1]. The source is encoded once and shared across time.
        """
        feats = self.generator.encode_source(source)
        if flow.ndim == 4:
            return self.generator.decode_features(source, feats, flow, occlusion)
        b, t = flow.shape[:2]
        sources = repeat(source, "b c h w -> (b t) c h w", t=t)
        feats = {str(i): repeat(f, "b c h w -> (b t) c h w", t=t) for i, f in enumerate(feats)}
        flows = rearrange(flow, "b t h w c -> (b t) h w c")
        occlusions = rearrange(occlusion, "b t c h w -> (b t) c h w")

        def run(s: Tensor, f: dict, fl: Tensor, oc: Tensor) -> tuple[Tensor]:
            return (self.generator.decode_features(s, [f[str(i)] for i in range(len(f))], fl, oc),)

        (frames,) = _chunked(run, chunk_size, sources, feats, flows, occlusions)
        return rearrange(frames, "(b t) c h w -> b t c h w", b=b)

    def reference_feature(self, source: Tensor) -> Tensor:
        """A2V-FDM's reference-frame condition: (B, 3, H, W) -> (B, 256, H/4, W/4) (generator.compute_fea)."""
        return self.generator.compute_fea(source)


def _chunked(fn: Callable[..., tuple], chunk_size: int | None, *args) -> tuple[Tensor, ...]:
    """Run ``fn`` over slices of the leading dim of every tensor in ``args`` (tensors or dicts of tensors) and
    concatenate the outputs; one call when chunk_size is None."""
    first = args[0]
    n = first.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(*args)

    def take(x, sl):
        return {k: v[sl] for k, v in x.items()} if isinstance(x, dict) else x[sl]

    outs = [fn(*(take(a, slice(i, i + chunk_size)) for a in args)) for i in range(0, n, chunk_size)]
    return tuple(torch.cat(parts, dim=0) for parts in zip(*outs))
