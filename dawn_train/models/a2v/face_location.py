"""Face-location branch of A2V-FDM: reference-frame face box -> binary mask (frame resolution R)
-> small conv encoder -> (B, 16, R/4, R/4) feature concatenated to the UNet input.

The official release never trains nor saves this encoder (``face_loc_emb``); its weights are the
default initialisation after ``torch.manual_seed(1234)`` followed by the construction of the LFG
generator, region predictor, background predictor and UNet.  :func:`official_face_loc_state_dict`
reproduces them without the official code by replaying the random draws of those constructions from
their state-dict layouts (names + shapes in registration order, e.g. read from the released LFG and
DAWN checkpoints).  Converted checkpoints must then carry the encoder weights like any others.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OFFICIAL_FACE_LOC_SEED = 1234


def bbox_mask(box: Tensor, size: int) -> Tensor:
    """Binary face mask (B, 1, size, size), equal to the official ``generate_bbox_mask``.

    box: (B, 6) = [x_min, x_max, y_min, y_max, D4, D5] of the reference frame, or (B, 6, T) (frame 0 is
    used).  Computed in float32: x' = x / D4 * size, y' = y / D5 * size (D4, D5 are the stored frame
    H and W, so this is only right for square frames); x0 = int(x_min'), x1 = int(x_max' + 1) (truncation
    toward zero), same for y; mask[r, c] = 1 iff y0 <= r <= y1 and x0 <= c <= x1.  Unlike the official
    function the input is not modified."""
    if box.ndim == 3:
        box = box[:, :, 0]
    box = box.to(torch.float32)
    x = box[:, 0:2] / box[:, 4:5] * size
    y = box[:, 2:4] / box[:, 5:6] * size
    x0, y0 = x[:, 0].to(torch.int32), y[:, 0].to(torch.int32)
    x1, y1 = (x[:, 1] + 1).to(torch.int32), (y[:, 1] + 1).to(torch.int32)
    idx = torch.arange(size, device=box.device, dtype=torch.int32)
    rows = (idx[None, :] >= y0[:, None]) & (idx[None, :] <= y1[:, None])  # (B, size)
    cols = (idx[None, :] >= x0[:, None]) & (idx[None, :] <= x1[:, None])
    return (rows[:, :, None] & cols[:, None, :])[:, None].to(torch.float32)


class FaceLocationEncoder(nn.Module):
    """Conv(1->8, 3, s2, p1) -> ReLU -> Conv(8->16, 3, s2, p1) -> ReLU (official ``Face_loc_Encoder``).
    mask: (B, 1, R, R) -> (B, 16, R/4, R/4)."""

    def __init__(self, in_channels: int = 1, hidden: int = 8, out_channels: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=3, stride=2, padding=1)

    def forward(self, mask: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(mask))))


# ---- regeneration of the official (never saved) weights -------------------------------------
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def official_init_draws(layout: Mapping[str, Sequence[int]]) -> list[tuple[str, int]]:
    """Random-initialisation draws, in order, made when the official module with this state-dict
    layout (name -> shape, registration order) is constructed with PyTorch default initialisers.

    Returns ``[(kind, numel)]`` with kind ``"uniform"`` (Conv/Linear weight and bias, kaiming-uniform)
    or ``"normal"`` (``nn.Embedding`` weights and the cross-attention ``null_kv``).  Norm gains/biases,
    BatchNorm statistics, rotary ``freqs`` and the LFG anti-alias kernels (``*.down.weight`` without a
    bias) are deterministic and draw nothing."""
    names = set(layout)
    draws = []
    for name, shape in layout.items():
        numel = 1
        for s in shape:
            numel *= int(s)
        stem, _, leaf = name.rpartition(".")
        if leaf in _BUFFER_SUFFIXES:
            continue
        if stem.endswith("relative_attention_bias") or leaf == "null_kv":
            draws.append(("normal", numel))
        elif leaf == "weight" and len(shape) >= 2:
            if stem.rpartition(".")[2] == "down" and f"{stem}.bias" not in names:
                continue  # AntiAliasInterpolation2d Gaussian kernel (buffer)
            draws.append(("uniform", numel))
        elif leaf == "bias" and len(layout.get(f"{stem}.weight", ())) >= 2:
            draws.append(("uniform", numel))
    return draws


def replay_init_draws(draws: Iterable[tuple[str, int]], generator: Optional[torch.Generator] = None) -> None:
    """Advance the (default CPU) generator exactly as the listed initialisations would."""
    for kind, numel in draws:
        scratch = torch.empty(numel, dtype=torch.float32)
        if kind == "uniform":
            scratch.uniform_(generator=generator)
        elif kind == "normal":
            scratch.normal_(generator=generator)
        else:
            raise ValueError(f"unknown draw kind {kind!r}")


def official_face_loc_state_dict(
    preceding_layouts: Sequence[Mapping[str, Sequence[int]]], seed: int = OFFICIAL_FACE_LOC_SEED
) -> dict[str, Tensor]:
    """Weights of the official ``face_loc_emb`` (conv1.*, conv2.*), regenerated on CPU.

    ``preceding_layouts``: state-dict layouts (name -> shape, registration order) of every module the
    official wrapper builds before the encoder, in construction order: LFG ``generator``,
    ``region_predictor``, ``bg_predictor`` (the three dicts of the LFG checkpoint) and the UNet
    (``checkpoint['diffusion']`` keys under ``denoise_fn.``; the schedule buffers draw nothing).
    The release was built with seed 1234 (test and stage-2 scripts).  Usage when converting::

        lfg = torch.load(lfg_pth, map_location="cpu", weights_only=True)
        dawn = torch.load(dawn_pth, map_location="cpu", weights_only=True)["diffusion"]
        layouts = [{k: v.shape for k, v in lfg[g].items()} for g in ("generator", "region_predictor", "bg_predictor")]
        layouts.append({k: v.shape for k, v in dawn.items()})
        face_loc = official_face_loc_state_dict(layouts)

    The global RNG state is saved and restored around the replay."""
    generator = torch.Generator().manual_seed(seed)
    for layout in preceding_layouts:
        replay_init_draws(official_init_draws(layout), generator)
    state = torch.random.get_rng_state()
    try:
        torch.random.set_rng_state(generator.get_state())
        encoder = FaceLocationEncoder()  # default init draws from the global generator
    finally:
        torch.random.set_rng_state(state)
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}
