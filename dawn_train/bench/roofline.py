"""`dawn-train bench roofline`: how fast the A2V-FDM UNet could run on a device, from its operators alone.

The call (a train step's forward and backward, or one denoise call) runs on the meta device: shapes only, no
arithmetic and no memory, seconds on a CPU.  For every operator it counts the FLOPs (torch's formulas: matrix
products, convolutions, attention) and the bytes it reads and writes (its tensor inputs and outputs; views move
nothing).  On a device with a peak of P FLOP/s and a memory bandwidth of W bytes/s an operator takes at least
max(flops / P, bytes / W).  The sum over the operators is the fastest this program, one kernel per operator as
written, could run, and FLOPs / P over that sum bounds its model FLOP utilisation (MFU).  A program that fused
everything would move only the weights and the activations kept for the backward (written once, read once): that
floor bounds what fusion (torch.compile, fused attention kernels) could reach.

It is a model, not a measurement: launch gaps, kernels below the bandwidth and the optimizer step are left out.
Measured figures come from `dawn-train bench cases --flops` on the device; the two side by side say how far the
kernels are from the bound, and the bound how far the program is from the goal.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from dawn_train.bench.cases import ATTN_BACKENDS, PEAK_TFLOPS
from dawn_train.stages.config_errors import ConfigError

# HBM bandwidth (TB/s) of the SXM parts whose dense bf16 peak `bench cases` knows, from the vendors' datasheets
BANDWIDTH_TBS = {"H200": 4.8, "H100": 3.35, "A100": 2.039}
DEVICES = {name: (peak, BANDWIDTH_TBS[name]) for name, peak in PEAK_TFLOPS["bf16-mixed"].items()}  # (TFLOP/s, TB/s)
CASES = ("a2v_step", "unet_call")
DTYPES = {"bf16": torch.bfloat16, "float32": torch.float32}
WINDOW = 80  # sampling window of `unet_call` (+-40 frames), as `bench cases`
# reshape/detach of a fresh tensor, and allocations whose contents are written by the next operator: no data moved
FREE = {torch.ops.aten._unsafe_view, torch.ops.aten.detach, torch.ops.aten.empty, torch.ops.aten.empty_like,
        torch.ops.aten.empty_strided, torch.ops.aten.new_empty, torch.ops.aten.new_empty_strided}


class RooflineError(ConfigError):
    """A roofline request that cannot be answered (float32 without a peak, an unknown device): a usage error."""


class OperatorTraffic(TorchDispatchMode):
    """Records (operator, FLOPs, bytes read and written) for every operator that runs under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        if func.overloadpacket in FREE or (not schema.is_mutable and any(r.alias_info for r in schema.returns)):
            return out  # a view: no kernel
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, Tensor)]
        packet = func.overloadpacket
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        self.ops.append((str(packet), int(flops), sum(t.numel() * t.element_size() for t in tensors)))
        return out


@contextlib.contextmanager
def cuda_attention_kernels() -> Iterator[None]:
    """Within: ``F.scaled_dot_product_attention`` runs the fused operator a CUDA device picks for it.  On the meta
    device torch always takes its math decomposition (scores written out, softmax, two ``bmm``), which is not what
    the ``sdpa`` backend runs on a GPU: there an additive bias (the temporal attention's relative positions and band)
    selects the memory-efficient kernel, which also returns the bias' gradient, and no bias with bf16 inputs selects
    flash attention.  Both read q, k, v with their strides and keep the scores on chip.  (Recent torch builds may
    prefer cuDNN's fused attention on Hopper where it takes the inputs; it keeps the scores on chip too, so the bytes
    are alike.  Which kernel a device runs is for a profile on it to say.)"""
    sdpa = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if dropout_p or is_causal or kwargs or query.dim() != 4:
            return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                               for t in (query, key, value, attn_mask))
        if attn_mask is None and query.dtype in (torch.bfloat16, torch.float16):
            # (B, H, L, E) in and out, as the efficient kernel; it always keeps the log-sum-exp for the backward
            return torch.ops.aten._scaled_dot_product_flash_attention(
                query, key, value, 0.0, False, False, scale=scale)[0]
        bias = None if attn_mask is None else attn_mask.expand(*query.shape[:-1], key.shape[-2])
        return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, grad, 0.0, False,
                                                                      scale=scale)[0]

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa


def trace(call: Callable[[], None], weights: tuple[Tensor, ...] = ()) -> tuple[OperatorTraffic, int]:
    """Run `call` under :class:`OperatorTraffic`; returns it and the bytes of the activations autograd saved
    (tensors saved for the backward, each storage once, `weights` left out: they are not activations)."""
    traffic, saved = OperatorTraffic(), {}
    held = {w.untyped_storage()._cdata for w in weights}

    def keep(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in held:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with traffic, torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        call()
    return traffic, sum(saved.values())


def bound(traffic: OperatorTraffic, peak_flops: float, bandwidth: float, floor_bytes: int, top: int = 8) -> dict:
    """Times (ms) and MFU bounds of the traced operators on a device of `peak_flops` FLOP/s and `bandwidth`
    bytes/s; `floor_bytes`: what a fully fused program would still move."""
    flops = sum(f for _, f, _ in traffic.ops)
    moved = sum(b for _, _, b in traffic.ops)
    per_op = sum(max(f / peak_flops, b / bandwidth) for _, f, b in traffic.ops)
    compute, floor = flops / peak_flops, floor_bytes / bandwidth
    groups = defaultdict(lambda: [0, 0, 0, 0.0])
    for name, f, b in traffic.ops:
        group = groups[name]
        group[0] += 1
        group[1] += f
        group[2] += b
        group[3] += max(f / peak_flops, b / bandwidth)
    largest = sorted(groups.items(), key=lambda kv: -kv[1][3])[:top]
    return {"kernels": len(traffic.ops), "flops": flops, "bytes": moved, "intensity": flops / moved if moved else None,
            "compute_ms": 1e3 * compute, "memory_ms": 1e3 * moved / bandwidth, "roofline_ms": 1e3 * per_op,
            "mfu_bound": compute / per_op if per_op else None, "fused_floor_bytes": floor_bytes,
            "fused_roofline_ms": 1e3 * max(compute, floor),
            "fused_mfu_bound": compute / max(compute, floor) if flops else None,
            "operators": [{"operator": name, "calls": c, "flops": f, "bytes": b, "ms": 1e3 * t}
                          for name, (c, f, b, t) in largest]}


def device_figures(device: str, dtype: str, peak_tflops: Optional[float],
                   bandwidth_tbs: Optional[float]) -> tuple[float, float]:
    """(peak TFLOP/s, bandwidth TB/s): given, else the named device's (bf16 peak only)."""
    if (peak_tflops is not None and peak_tflops <= 0) or (bandwidth_tbs is not None and bandwidth_tbs <= 0):
        raise RooflineError(f"need --peak-tflops > 0 and --bandwidth-tbs > 0 (got {peak_tflops}, {bandwidth_tbs})")
    if device not in DEVICES and (peak_tflops is None or bandwidth_tbs is None):
        raise RooflineError(f"unknown device {device!r}: choose from {', '.join(DEVICES)} or give --peak-tflops and "
                            f"--bandwidth-tbs")
    if peak_tflops is None and dtype != "bf16":
        raise RooflineError(f"no {dtype} peak is known for {device} (matrix products and convolutions run at other "
                            f"rates in {dtype}): give --peak-tflops")
    known = DEVICES.get(device, (None, None))
    return (known[0] if peak_tflops is None else peak_tflops), (known[1] if bandwidth_tbs is None else bandwidth_tbs)


def roofline(case: str = "a2v_step", *, size: str = "release", batch: int = 16, frames: int = 20,
             dtype: str = "bf16", implementation: str = "fast", attn_backend: str = "math", device: str = "H200",
             peak_tflops: Optional[float] = None, bandwidth_tbs: Optional[float] = None, top: int = 8) -> dict:
    """The roofline of `case` at the `size` preset's A2V-FDM (see the module docstring):
    - `a2v_step`: the UNet's training forward (null-condition draw 0.1) over a batch of `batch` clips of `frames`
      frames, an MSE loss and its backward (the step `bench cases a2v_step_t20` times, without the optimizer);
    - `unet_call`: one denoise call without gradients over `frames` frames, window 80, chunked as on CUDA.
    `dtype` bf16 stands for a bf16 program (weights and activations: autocast's casts are left out).  `attn_backend`:
    the UNet's attention kernels; ``sdpa`` is traced with the fused kernels CUDA runs for it
    (:func:`cuda_attention_kernels`)."""
    from dawn_train.bench.case_workloads import SIZES
    from dawn_train.models.a2v import build_a2v

    if case not in CASES:
        raise RooflineError(f"unknown case {case!r}: choose from {', '.join(CASES)}")
    if attn_backend not in ATTN_BACKENDS:
        raise RooflineError(f"unknown attention backend {attn_backend!r}: choose from {', '.join(ATTN_BACKENDS)}")
    if dtype not in DTYPES or batch < 1 or frames < 1 or top < 0:
        raise RooflineError(f"need dtype in {', '.join(DTYPES)}, batch >= 1, frames >= 1 and top >= 0 "
                            f"(got {dtype!r}, {batch}, {frames}, {top})")
    peak, bandwidth = device_figures(device, dtype, peak_tflops, bandwidth_tbs)
    spec, kind = SIZES[size], DTYPES[dtype]
    step = case == "a2v_step"
    batch = batch if step else 1
    with torch.device("meta"):
        window = {} if step else {"window_size": WINDOW}
        unet = build_a2v(**spec["a2v"], **window, implementation=implementation,
                         attn_backend=attn_backend).unet.to(kind).train(step)
    latent = spec["image"] // 4

    def meta(*shape: int) -> Tensor:
        return torch.empty(*shape, device="meta", dtype=kind)

    time = torch.zeros(batch, dtype=torch.long, device="meta")
    cond = meta(batch, frames, unet.cond_dim)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    if step:
        x, context = meta(batch, 3, frames, latent, latent), meta(batch, unet.channels - 3, latent, latent)

        def call() -> None:
            out = unet(x, time, cond, null_cond_prob=0.1, context=context)
            (out.float() - x.float()).square().mean().backward()

        with cuda_attention_kernels():
            traffic, saved = trace(call, tuple(unet.parameters()))
        floor = 4 * weights + 2 * saved + 2 * x.nbytes  # weights read twice, gradients written and summed
    else:
        x = meta(batch, unet.channels, frames, latent, latent)

        def call() -> None:
            with torch.no_grad(), unet.chunks_sized_for("cuda"):
                unet(x, time, cond)

        with cuda_attention_kernels():
            traffic, saved = trace(call)
        floor = weights + 2 * x.nbytes
    shapes = f"B={batch}, T={frames}, latent {latent}, dim {unet.init_conv.out_channels}"
    return {"case": case, "size": size, "shapes": shapes, "dtype": dtype, "implementation": implementation,
            "attn_backend": attn_backend, "device": device, "peak_tflops": peak, "bandwidth_tbs": bandwidth, "saved_bytes": saved,
            **bound(traffic, peak * 1e12, bandwidth * 1e12, floor, top)}
