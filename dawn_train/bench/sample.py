"""`dawn-train bench sample`: one non-autoregressive DDIM generation of T frames with the A2V-FDM,
banded temporal attention (ours, `window_size`) vs full temporal attention (`window_size=None`).

Full attention has the cost of the official inference UNet (masked full attention: same O(T^2) score
matrices, the mask only changes values), so the comparison shows what the band buys in time and memory.
The two outputs differ once T exceeds the window, by design.  The LFG decode is not included (it is
per frame, linear in T).  Presets: `demo` (the tiny CPU config, 64-px frames, 16 x 16 latents) and
`release` (the official 49.9 M-parameter UNet; latent 32 = 128 px, 64 = 256 px).  Peak memory as in
`bench attention`.
"""
from __future__ import annotations

import copy

import torch

from dawn_train.bench.attention import measure, resolve_device, side_by_side
from dawn_train.models.a2v import build_a2v

PRESETS = {
    "demo": dict(model=dict(dim=16, dim_mults=(1, 2), ref_channels=32, cond_aud=80, attn_heads=2, attn_dim_head=16,
                            init_kernel_size=3, resnet_groups=4), latent=16),
    "release": dict(model=dict(), latent=32),
}


@torch.no_grad()
def bench_sample(frames: int = 200, window: int | None = 80, preset: str = "demo", latent: int | None = None,
                 steps: int = 20, device: str = "auto", dtype: str = "float32", attn_backend: str = "math",
                 repeats: int = 1, warmup: int | None = None, seed: int = 0, progress: bool = False) -> dict:
    """Time and peak memory of `steps` DDIM steps over `frames` frames (batch 1), after `warmup` untimed
    generations (default: 1 on CUDA, 0 on CPU).  `progress`: a tqdm bar (stderr) per generation."""
    from tqdm.auto import tqdm

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    dev = resolve_device(device)
    dt = getattr(torch, dtype)
    spec = PRESETS[preset]
    size = latent or spec["latent"]
    torch.manual_seed(seed)
    ours = build_a2v(**spec["model"], window_size=window, attn_backend=attn_backend, sampling_timesteps=steps)
    ours = ours.to(dev, dt).eval()
    full = copy.deepcopy(ours)
    full.unet.window_size = None
    ref_channels = ours.unet.channels - 3 - ours.face_loc_emb.conv2.out_channels
    generator = torch.Generator(device=dev).manual_seed(seed)
    ref_fea = torch.randn(1, ref_channels, size, size, generator=generator, device=dev, dtype=dt)
    frame = size * ours.mask_scale  # frame resolution R
    box = torch.tensor([[0.25 * frame, 0.75 * frame, 0.2 * frame, 0.9 * frame, frame, frame]], device=dev)
    cond = torch.randn(1, frames, ours.unet.cond_dim, generator=generator, device=dev, dtype=dt)

    def run(model, name: str):
        def bar(pairs):
            return tqdm(pairs, desc=f"{name} attention, {frames} frames", unit="step", disable=not progress,
                        leave=False)

        return lambda: model.sample(ref_fea, box, cond, generator=torch.Generator(device=dev).manual_seed(seed),
                                    progress=bar)

    result = {"device": str(dev), "preset": preset, "latent": size, "frames": frames, "window": window, "steps": steps,
              "dtype": dtype, "params": sum(p.numel() for p in ours.parameters())}
    if warmup is None:
        warmup = 1 if dev.type == "cuda" else 0
    result.update(side_by_side(measure(run(ours, "banded"), dev, repeats, warmup),
                               measure(run(full, "full"), dev, repeats, warmup)))
    return result
