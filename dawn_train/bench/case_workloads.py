"""The workloads of `dawn-train bench cases`, built in the fresh process that times one case (`case_run.py`, run by
`cases.py`).

A builder takes a :class:`Setup` (size preset, implementation, device, DDIM steps) and returns a :class:`Workload`:
`fn` is the call that is timed (one train step with its optimizer step, one denoise call, one generation), `shapes`
says what it computes, `compile_targets` are the methods `--compile` wraps with `torch.compile`, and `estimate` (the
UNet cases) predicts the peak memory of one call before it runs.  Inputs are random tensors of the right shapes,
models random (seed 0, the same weights for both implementations); nothing is downloaded or read from disk.

Sizes (`SIZES`): `demo` = the models of experiments/demo/*.yaml (64-px frames, latent 16); `release` = the official
released models (128-px frames, latent 32): LFG and PBNet at their constructors' defaults (the release
architectures, as `checkpoints.default_config` builds them), A2V-FDM at `build_a2v`'s defaults (UNet dim 64, mults
(1, 2, 4, 8), 256 reference channels, 1024 audio dims).

`implementation` ("fast" | "reference") is passed to the constructors that take it (`build_a2v`); a case whose
models take none runs one model, and `Workload.implementation_applied` says so.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from dawn_train.bench.generate import DEMO_LFG, DEMO_PBNET, DEMO_PBNET_UNITS
from dawn_train.bench.sample import PRESETS
from dawn_train.stages.optim import fused_on_cpu

WINDOW = 80  # temporal window of the UNet cases and of sampling (paper count: +-40 frames)
TARGET_FRAMES = 40  # frames of one A2V training clip (curriculum stage 2 draws 30-40)
LFG_CHUNK = 256  # frames per LFG call while computing targets (A2VStage's default lfg_chunk_size)
DECODE_CHUNK = 32  # frames per LFG decode call (generate's default --decode-chunk)
SIZES = {
    "demo": {"image": 64, "lfg": DEMO_LFG["init_args"], "a2v": PRESETS["demo"]["model"],
             "pbnet": DEMO_PBNET, "pbnet_units": DEMO_PBNET_UNITS},
    "release": {"image": 128, "lfg": {}, "a2v": {}, "pbnet": {}, "pbnet_units": {}},
}


@dataclass
class Setup:
    size: str = "demo"  # a key of SIZES
    implementation: str = "fast"  # "fast" | "reference"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    steps: int = 20  # DDIM steps (sample_t200)
    batch: Optional[int] = None  # batch of the train-step cases (None: each case's own, as in the table)
    attn_backend: str = "math"  # the A2V-FDM's attention kernels ("math" | "sdpa"), for factories that take one
    applied: bool = False  # set by `build` when a constructor took `implementation`
    backend_applied: bool = False  # ... and `attn_backend`

    @property
    def spec(self) -> dict:
        return SIZES[self.size]

    @property
    def image(self) -> int:
        return self.spec["image"]

    @property
    def latent(self) -> int:
        return self.image // 4

    def build(self, factory: Callable[..., nn.Module], **kwargs) -> nn.Module:
        """`factory(**kwargs)` on this device, with `implementation=` (and `attn_backend=`) when the factory takes
        it."""
        try:
            takes = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes = {}
        if "implementation" in takes:
            kwargs["implementation"] = self.implementation
            self.applied = True
        if "attn_backend" in takes:
            kwargs["attn_backend"] = self.attn_backend
            self.backend_applied = True
        return factory(**kwargs).to(self.device)

    def rand(self, *shape: int, scale: float = 1.0) -> Tensor:
        return torch.randn(*shape, device=self.device) * scale

    def frames(self, *lead: int) -> Tensor:
        """Random uint8 frames (*lead, 3, R, R), as the data streams deliver them."""
        return torch.randint(0, 256, (*lead, 3, self.image, self.image), dtype=torch.uint8, device=self.device)

    def face_box(self) -> Tensor:
        """(1, 6) official face-box vector of a centred face."""
        r = float(self.image)
        return torch.tensor([[0.25 * r, 0.75 * r, 0.2 * r, 0.9 * r, r, r]], device=self.device)


@dataclass
class Workload:
    fn: Callable[[], object]
    shapes: str
    params: int
    compile_targets: list[tuple[nn.Module, tuple[str, ...]]]
    estimate: Optional[Callable[[], int]] = None  # bytes one call needs above what is loaded (UNet cases)
    samples: int = 0  # training samples (clips, frame pairs, windows) one call consumes: samples/s = samples / s


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def lfg_compile_targets(lfg: nn.Module) -> list[tuple[nn.Module, tuple[str, ...]]]:
    """The LFG generator: its forward (training), the flow predictor and feature paths (targets), decoding."""
    gen = lfg.generator
    return [(gen, ("forward", "compute_fea", "encode_source", "decode_features")),
            (gen.pixelwise_flow_predictor, ("forward",))]


# ---- LFG --------------------------------------------------------------------------------------------------------
def lfg_step(setup: Setup, full: bool) -> Workload:
    """One LFG train step on B (source, driving) pairs (B, 3, R, R) in [0, 1] (`Setup.batch`, default 2): `LFGStage.losses`, backward, Adam step
    (the stage's official optimizer).  full: VGG19 perceptual pyramid (4 scales x 5 layers; 3 scales at 64 px, where
    the 1/8 scale is too small for VGG; random VGG weights, the cost of ImageNet's) + equivariance (shift and affine
    terms, a third region-predictor pass); else the stage's multi-scale L1 fallback only (`perceptual: l1`,
    equivariance weights 0): the flow autoencoder and an L1."""
    from dawn_train.models.lfg import LatentFlowGenerator
    from dawn_train.models.lfg.vgg import Vgg19Features
    from dawn_train.stages.lfg import LFGStage

    lfg = setup.build(LatentFlowGenerator, **setup.spec["lfg"]).train()
    if full:
        # the stage's pyramid scales where VGG19's 4 poolings leave a pixel (all 4 at 128 px, 3 at 64 px)
        official = inspect.signature(LFGStage).parameters["scales"].default
        scales = tuple(s for s in official if setup.image * s >= 16)
        stage = LFGStage(lfg, perceptual="l1", scales=scales)  # as the tests build it: no VGG weights file
        stage.vgg = Vgg19Features().eval()  # then what `perceptual: vgg19` loads, with random weights
    else:
        stage = LFGStage(lfg, perceptual="l1", equivariance_shift_weight=0.0, equivariance_affine_weight=0.0)
    stage.to(setup.device)
    optimizer = torch.optim.Adam(lfg.parameters(), lr=stage.hparams.lr, betas=(0.5, 0.999), fused=fused_on_cpu(lfg.parameters()))
    batch = setup.batch or 2
    source, driving = (setup.frames(batch).float() / 255 for _ in range(2))

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        losses, _ = stage.losses(source, driving)
        loss = sum(losses.values())
        loss.backward()
        optimizer.step()
        return loss.detach()

    loss = f"VGG19 pyramid x{len(stage.hparams.scales)} + equivariance" if full else "multi-scale L1"
    return Workload(step, f"B={batch}, {setup.image} px, {loss}", n_params(lfg), lfg_compile_targets(lfg),
                    samples=batch)


def lfg_targets(setup: Setup) -> Workload:
    """The frozen LFG's part of `A2VStage.prepare` for one clip: frames (1, 40, 3, R, R) uint8 and the reference
    frame -> flow (1, 40, h, w, 2) + occlusion -> x_start (1, 3, 40, h, w), and the reference feature (1, C, h, w)."""
    from dawn_train.models.a2v.conditioning import latent_target
    from dawn_train.models.lfg import LatentFlowGenerator

    lfg = setup.build(LatentFlowGenerator, **setup.spec["lfg"]).eval().requires_grad_(False)
    frames, ref = setup.frames(1, TARGET_FRAMES), setup.frames(1)

    def targets() -> tuple[Tensor, Tensor]:
        with torch.no_grad(), torch.autocast(setup.device.type, enabled=False):
            clip, reference = frames.float() / 255, ref.float() / 255
            flow, occlusion = lfg.encode(reference, clip, chunk_size=LFG_CHUNK)
            return latent_target(flow, occlusion), lfg.reference_feature(reference)

    shapes = f"1 clip x {TARGET_FRAMES} frames, {setup.image} px -> latent {setup.latent}"
    return Workload(targets, shapes, n_params(lfg), lfg_compile_targets(lfg))


# ---- A2V-FDM ----------------------------------------------------------------------------------------------------
def a2v_inputs(setup: Setup, model: nn.Module, frames: int, batch: int = 1) -> dict[str, Tensor]:
    """Random x_start (B, 3, T, h, w), ref_fea (B, C_ref, h, w), box (B, 6), cond (B, T, D) for `model`."""
    h, unet = setup.latent, model.unet
    ref_channels = unet.channels - 3 - model.face_loc_emb.conv2.out_channels
    return {"x_start": setup.rand(batch, 3, frames, h, h).clamp(-1, 1), "ref_fea": setup.rand(batch, ref_channels, h, h),
            "box": setup.face_box().expand(batch, -1), "cond": setup.rand(batch, frames, unet.cond_dim)}


def a2v_step(setup: Setup, frames: int = 20) -> Workload:
    """One A2V-FDM train step, B clips (`Setup.batch`, default 1) of T frames: A2VFDM forward (random diffusion step, null-condition draw) -> mean
    loss -> backward -> Adam step (A2VStage's optimizer).  Train mode: the training window (`train_window_size`, none by default: full
    temporal attention, as the release trains)."""
    from dawn_train.models.a2v import build_a2v

    model = setup.build(build_a2v, **setup.spec["a2v"]).train()
    batch = setup.batch or 1
    inputs = a2v_inputs(setup, model, frames, batch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99), fused=fused_on_cpu(params))  # as A2VStage
    generator = torch.Generator(device=setup.device).manual_seed(0)

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        out = model(inputs["x_start"], inputs["ref_fea"], inputs["box"], inputs["cond"], generator=generator)
        loss = out["loss"].mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    shapes = f"B={batch}, T={frames}, latent {setup.latent}, dim {model.unet.init_conv.out_channels}"
    return Workload(step, shapes, n_params(model), [(model.unet, ("forward",))], samples=batch)


def unet_call(setup: Setup, frames: int) -> Workload:
    """One UNet denoise call without gradients, eval mode (sampling window 80 = +-40 frames): x (1, C, T, h, w),
    step (1,), cond (1, T, D) -> (1, 3, T, h, w).  `estimate`: the call's live tensors traced on the meta device,
    plus the allocator and kernel workspace (`inference/memory.process_bytes`)."""
    from dawn_train.inference.memory import live_tensor_peak, process_bytes
    from dawn_train.models.a2v import build_a2v

    model = setup.build(build_a2v, **setup.spec["a2v"], window_size=WINDOW).eval()
    unet, h = model.unet, setup.latent
    x = setup.rand(1, unet.channels, frames, h, h)
    time = torch.tensor([500], device=setup.device)
    cond = setup.rand(1, frames, unet.cond_dim)

    def denoise() -> Tensor:
        with torch.no_grad():
            return unet(x, time, cond)

    def estimate() -> int:
        with unet.chunks_sized_for(setup.device.type):  # the trace runs on the meta device
            return process_bytes(live_tensor_peak(unet, "forward", x, time, cond), setup.device)

    shapes = f"T={frames}, window {WINDOW}, latent {h}, dim {unet.init_conv.out_channels}"
    return Workload(denoise, shapes, n_params(unet), [(unet, ("forward",))], estimate)


def sample(setup: Setup, frames: int = 200) -> Workload:
    """`animate` as generate runs it: reference feature, one DDIM sample of T frames (`steps` steps, window 80),
    then the LFG decode of every frame (32 per call): ref (1, 3, R, R) -> video (1, T, 3, R, R)."""
    from dawn_train.models.a2v import build_a2v
    from dawn_train.models.a2v.conditioning import animate
    from dawn_train.models.lfg import LatentFlowGenerator

    a2v = setup.build(build_a2v, **setup.spec["a2v"], window_size=WINDOW, sampling_timesteps=setup.steps).eval()
    lfg = setup.build(LatentFlowGenerator, **setup.spec["lfg"]).eval().requires_grad_(False)
    ref = setup.frames(1).float() / 255
    box, cond = setup.face_box(), setup.rand(1, frames, a2v.unet.cond_dim)

    def generate() -> Tensor:
        with torch.no_grad():
            generator = torch.Generator(device=setup.device).manual_seed(0)
            return animate(lfg, a2v, ref, box, cond, generator=generator, steps=setup.steps,
                           decode_chunk=DECODE_CHUNK)["video"]

    shapes = f"T={frames}, {setup.steps} DDIM steps, window {WINDOW}, {setup.image} px"
    return Workload(generate, shapes, n_params(a2v, lfg), [(a2v.unet, ("forward",))] + lfg_compile_targets(lfg))


# ---- PBNet ------------------------------------------------------------------------------------------------------
def pbnet_step(setup: Setup, frames: int = 200) -> Workload:
    """One PBNet pose train step: batch of pose (B, T, 6) in data units and audio features (B, T, A) ->
    `PBNetStage.inputs` -> `losses` (reconstruction, KL, smoothness) -> backward -> grad clip -> AdamW step
    (the stage's official optimizer, weight decay 0.01)."""
    from dawn_train.models.pbnet import PBNet
    from dawn_train.stages.pbnet import PBNetStage

    batch = setup.batch or 4
    model = setup.build(PBNet, **{**setup.spec["pbnet"], "pos_dim": 6, "eye_dim": 0}).train()
    stage = PBNetStage(model, target="pose", **setup.spec["pbnet_units"]).to(setup.device)
    r = float(setup.image)
    centre = torch.tensor([0.0, 0.0, 0.0, 0.6, r / 2, r / 2], device=setup.device)
    spread = torch.tensor([10.0, 5.0, 3.0, 0.05, r / 20, r / 20], device=setup.device)
    data = {"pose": centre + setup.rand(batch, frames, 6) * spread, "audio_feat": setup.rand(batch, frames, model.audio_dim),
            "length": torch.full((batch,), frames, device=setup.device)}
    optimizer = torch.optim.AdamW(stage.param_groups(), lr=stage.hparams.lr, weight_decay=0.01,
                                  fused=fused_on_cpu(stage.param_groups()))

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        x, audio, mask = stage.inputs(data)
        terms, _ = stage.losses(x, audio, mask, step=0)
        terms["loss"].backward()
        if stage.hparams.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), stage.hparams.grad_clip)
        optimizer.step()
        return terms["loss"].detach()

    shapes = f"B={batch}, T={frames}, audio {model.audio_dim}-d"
    return Workload(step, shapes, n_params(model), [], samples=batch)


BUILDERS: dict[str, Callable[[Setup], Workload]] = {
    "lfg_step_full": lambda s: lfg_step(s, full=True),
    "lfg_step_l1": lambda s: lfg_step(s, full=False),
    "lfg_targets": lfg_targets,
    "a2v_step_t20": lambda s: a2v_step(s, frames=20),
    "unet_t40": lambda s: unet_call(s, 40),
    "unet_t200": lambda s: unet_call(s, 200),
    "unet_t600": lambda s: unet_call(s, 600),
    "sample_t200": lambda s: sample(s, frames=200),
    "pbnet_step": lambda s: pbnet_step(s, frames=200),
}
