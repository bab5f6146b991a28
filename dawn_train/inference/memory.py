"""Peak memory of a generation, estimated before the work starts, and the check that refuses what does not fit.

    peak = held + max(features, PBNet, DDIM, decode)

`held` is what lives through every phase (the 16 kHz audio, the per-frame features and condition, the latent
motion of all frames); each phase adds its working memory while it runs:

    features  chunked log-mel: ~10 KiB per frame of one chunk (measured, numpy/torch STFT)
    PBNet     one decoder pass over all frames (pose, then blink model)
    DDIM      one denoiser call over the frames of a window (all frames without --chunk-seconds), plus the
              sampler state (x_t, noise, x0, thresholding copies: DDIM_STATE_COPIES x the latent) and, in
              windows, the window's pre-drawn noise (steps + 1 latents)
    decode    one LFG decode of `decode_chunk` frames, their uint8 copy and the H.264 encoder

The torch phases are not guessed from formulas: :func:`live_tensor_peak` (`inference/meta_trace.py`) runs the
loaded models on the meta device (shapes and dtypes only, no arithmetic and no memory) and records the peak of
live tensor bytes, so the estimate follows the actual model sizes, latent size, frame count, window and dtype,
and stays right when a model changes.  Beyond 4,096 frames the banded UNet's peak is the line through its traces at
2,048 and 4,096 frames, which equals its full trace to the byte and takes seconds instead of minutes
(:meth:`MemoryModel._traced`).  Beyond what tensors hold, a process needs allocator and kernel workspace
(oneDNN reorders, glibc heap), calibrated on CPU against measured peak RSS:

    CPU RSS above the loaded models  ~=  live + min(0.75 x live, 600 MiB + 0.1 x live)

One DDIM step (peak RSS increase in-process; `tests/inference/test_memory.py` checks T=800):

    demo UNet (64 px), window 80:  T=400: live 325 MiB, measured  512 MiB, estimate  569 MiB (+11 %)
                                   T=800:      490                783              858 (+10 %)
                                   T=1600:     840               1354             1470  (+9 %)
                                   T=3200:    1679               2182             2447 (+12 %)
    release UNet (128 px):         T=48:      1655               1938             2421 (+25 %)
                                   T=96:      2569               2891             3426 (+19 %)

Whole generations (`dawn-train bench generate`, random demo-architecture models, 1 DDIM step; peak RSS
minus the RSS with models and inputs loaded):

    10 s:  one pass 417 MiB measured / 475 estimated (+14 %), dense PBNet 413 / 475 (+15 %)
    60 s:  windows of 10 s 416 / 485 (+17 %), one pass 1023 / 1387 (+36 %), dense PBNet 1111 / 1387 (+25 %)
    600 s: windows of 10 s 459 / 567 (+24 %), one pass 9541 / 9349 (-2 %); dense PBNet estimated 16.6 GiB

so the estimate is within -2 % / +36 % of what was measured (conservative at small sizes, where the
workspace term dominates).  On CUDA the same trace is used with `live x 1.1 + 256 MiB` (caching-allocator
rounding, cuDNN workspace): not calibrated on a GPU yet, so treat it as a rough figure.

The budget is what the device can still give: `MemAvailable` of /proc/meminfo (psutil when installed) on CPU,
`torch.cuda.mem_get_info` on CUDA, or an explicit `memory_budget` (GiB; tests use a small one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from dawn_train.inference.meta_trace import architecture, live_tensor_peak, meta_like  # noqa: F401 (re-exported)

GiB, MiB, KiB = 2 ** 30, 2 ** 20, 2 ** 10
FEATURE_BYTES_PER_FRAME = 10 * KiB  # log-mel: STFT (complex64, 513 bins) + power + mel, measured 9.4 KiB
FEATURE_CHUNK_FRAMES = 1500  # frames of audio features computed per call (60 s)
DDIM_STATE_COPIES = 10  # latent-sized tensors of one DDIM step besides the denoiser (x_t, eps, x0, z, sort copy)
ENCODER_BYTES = 64 * MiB  # libx264 look-ahead and PyAV buffers at <= 256 px
CPU_OVERHEAD_RATIO, CPU_OVERHEAD_BASE, CPU_OVERHEAD_SLOPE = 0.75, 600 * MiB, 0.1
CUDA_OVERHEAD_SCALE, CUDA_OVERHEAD_BYTES = 1.1, 256 * MiB
# frame counts traced in full for searches (interpolated between them) and as the line that long UNet estimates
# follow beyond the last one (`MemoryModel._traced`)
SEARCH_GRID = (1, 64, 256, 1024, 2048, 4096)


class InsufficientMemory(ValueError):
    """The generation would need more memory than the device has; the message says how much and what fits
    (`estimate` and `budget` hold the figures)."""

    def __init__(self, message: str, estimate: Optional["MemoryEstimate"] = None, budget: Optional[int] = None):
        super().__init__(message)
        self.estimate, self.budget = estimate, budget


def process_bytes(live: float, device: torch.device | str) -> int:
    """Memory a process needs for `live` bytes of tensors (allocator and kernel workspace included)."""
    if torch.device(device).type == "cuda":
        return int(CUDA_OVERHEAD_SCALE * live + CUDA_OVERHEAD_BYTES)
    return int(live + min(CPU_OVERHEAD_RATIO * live, CPU_OVERHEAD_BASE + CPU_OVERHEAD_SLOPE * live))


# ---- the budget -------------------------------------------------------------------------------------
def available_memory(device: torch.device | str) -> int:
    """Bytes the device can still give: free CUDA memory (plus what torch's caching allocator holds unused), or
    the host's available memory (psutil when installed, else `MemAvailable` of /proc/meminfo)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KiB
    raise OSError("cannot tell the available memory (no psutil, no MemAvailable in /proc/meminfo)")


def process_rss() -> tuple[int, int]:
    """(current, peak) resident set of this process in bytes: `VmRSS` and `VmHWM` of /proc/self/status (the
    peak of this process image alone, unlike `ru_maxrss`, which a child inherits from its parent's size at
    fork); (0, ru_maxrss) where /proc is missing."""
    values = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line.split(":")[0]] = int(line.split()[1]) * KiB
    except OSError:
        pass
    if "VmHWM" in values:
        return values.get("VmRSS", 0), values["VmHWM"]
    import resource

    return 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KiB


def memory_budget(device: torch.device | str, budget_gib: Optional[float] = None) -> int:
    """The bytes a generation may use: `budget_gib` when given, else what the device has available."""
    if budget_gib is not None:
        if budget_gib <= 0:
            raise ValueError(f"memory_budget must be > 0 GiB, got {budget_gib}")
        return int(budget_gib * GiB)
    return available_memory(device)


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


# ---- the estimate -----------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Estimated peak memory of one generation above the loaded models (bytes)."""

    frames: int
    window: int  # frames per A2V-FDM call (= frames in one pass)
    device: str
    held: int
    phases: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return self.held + max(self.phases.values(), default=0)

    @property
    def windowed(self) -> bool:
        return self.window < self.frames

    def describe(self) -> str:
        parts = ", ".join(f"{name} {gib(n)}" for name, n in sorted(self.phases.items(), key=lambda kv: -kv[1]))
        how = f"windows of {self.window} frames" if self.windowed else "one pass"
        return f"{gib(self.peak)} for {self.frames} frames in {how} ({parts}; held {gib(self.held)})"


class MemoryModel:
    """Working memory of a loaded pipeline as a function of the frame count (and A2V window).

    lfg: a `LatentFlowGenerator`; a2v: an `A2VFDM` (its UNet's current window counts); pbnets: the PBNet
    models that will run (none when pose/blink come from files); image_size R (latent h = R / a2v.mask_scale);
    audio_dim D; decode_chunk: frames per LFG decode; steps: DDIM steps (pre-drawn noise of windows)."""

    def __init__(self, lfg: nn.Module, a2v: nn.Module, pbnets: Sequence[nn.Module] = (), *, image_size: int,
                 audio_dim: int, decode_chunk: int = 32, steps: int = 20, device: torch.device | str = "cpu") -> None:
        self.lfg, self.a2v, self.pbnets = lfg, a2v, list(pbnets)
        self.image_size, self.audio_dim = int(image_size), int(audio_dim)
        self.latent = self.image_size // int(getattr(a2v, "mask_scale", 4))
        self.decode_chunk, self.steps = max(1, int(decode_chunk)), int(steps)
        self.device = str(device)
        first = next(a2v.parameters(), None)
        self.dtype = first.dtype if first is not None else torch.float32
        # Live bytes of one call of a feature model (HuBERT: one batch of windows, traced by the caller); None: the
        # chunked log-mel.  Its weights are loaded before the check, so they are in the budget already.
        self.feature_model_live: Optional[int] = None

    # -- traced phases (live tensor bytes) --
    @staticmethod
    def _traced(frames: int, trace: Callable[[int], int], banded: bool, approximate: bool = False,
                extrapolate: bool = False) -> int:
        """trace(frames), except for banded models (memory linear in the frame count beyond a few window lengths):
        - with `extrapolate` (the UNet), beyond the last SEARCH_GRID point, the line through the traces at its
          last two points.  A trace runs the model op by op, and the banded attention's chunk loops make that slow
          for long clips (the release UNet at 15,000 frames: 213 s on 2 CPU threads, the two grid traces 31 s);
          for the UNet the line is the full trace to the byte (release and demo UNet at 15,000 frames;
          `tests/inference/test_memory.py` checks the demo one at 6,000).  PBNet's is not (0.4 % above at 6,000
          frames) and its full trace is quick, so it is traced in full;
        - with `approximate` (searches), between grid points, the straight line between the neighbouring traces.
          Below a few window lengths it can err either way by a fraction of the attention working set, which is
          why the searches confirm their answer without `approximate`."""
        beyond = extrapolate and frames > SEARCH_GRID[-1]
        if not banded or frames in SEARCH_GRID or not (approximate or beyond):
            return trace(frames)
        upper = next((i for i, g in enumerate(SEARCH_GRID) if g > frames), len(SEARCH_GRID) - 1)
        lo, hi = SEARCH_GRID[upper - 1], SEARCH_GRID[upper]
        a, b = trace(lo), trace(hi)
        return a + -(-(b - a) * (frames - lo) // (hi - lo))  # rounded up

    def denoiser_live(self, frames: int, approximate: bool = False) -> int:
        """One denoiser call (UNet input concatenation included) over `frames` frames."""
        diffusion, h = self.a2v.diffusion, self.latent
        context = self.a2v.unet.channels - diffusion.channels

        def trace(t: int) -> int:
            return live_tensor_peak(diffusion, "predict_noise", (1, diffusion.channels, t, h, h),
                                    meta_like((1,), torch.long), (1, context, h, h), (1, t, self.a2v.unet.cond_dim),
                                    dtype=self.dtype)

        with self.a2v.unet.chunks_sized_for(torch.device(self.device).type):  # the trace runs on the meta device
            return self._traced(frames, trace, self.a2v.unet.half_width() is not None, approximate,
                                extrapolate=True)

    def pbnet_live(self, frames: int, approximate: bool = False) -> int:
        """The largest of the PBNet decoder passes over `frames` frames (eval mode)."""
        peaks = [0]
        for model in self.pbnets:
            decoder = model.decoder
            windows = [t.window for t in (decoder.time_rel_pos_bias_tgt, decoder.time_rel_pos_bias_mem)]
            banded = decoder.banded and None not in windows and not decoder.training

            def trace(t: int, model=model) -> int:
                dtype = next(model.parameters()).dtype
                return live_tensor_peak(model.decoder, "forward", (1, 1, model.feature_dim), (1, t, model.latent_dim),
                                        (1, t, model.decoder.audioEmbedding.in_features),
                                        meta_like((1, t), torch.bool), dtype=dtype)

            peaks.append(self._traced(frames, trace, banded, approximate))
        return max(peaks)

    def decode_live(self) -> int:
        """One LFG decode of `decode_chunk` frames (float32, outside autocast)."""
        c, h, r = self.decode_chunk, self.latent, self.image_size

        def trace(_: int) -> int:
            return live_tensor_peak(self.lfg, "decode", (1, 3, r, r), (1, c, h, h, 2), (1, c, 1, h, h),
                                    dtype=torch.float32)

        return trace(c)

    # -- the estimate --
    def estimate(self, frames: int, window: Optional[int] = None, *, features: bool = True,
                 approximate: bool = False) -> MemoryEstimate:
        """Estimate for `frames` frames, in windows of `window` frames (None: one pass); `approximate`: traces
        of banded models interpolated between a few frame counts (fast, for searches)."""
        frames = int(frames)
        window = frames if window is None else max(1, min(int(window), frames))
        size = self.dtype.itemsize
        latent_frame = 3 * self.latent * self.latent  # elements of one frame's latent motion
        held = frames * (640 * 4  # 16 kHz float32 audio
                         + self.audio_dim * 4 * 2  # features (float32) and the condition tensor
                         + 8 * 4 * 2  # pose, blink (+ their condition deltas)
                         + latent_frame * 4)  # x0 of all frames: filled window by window, then decoded
        ddim = (self.denoiser_live(window, approximate) + DDIM_STATE_COPIES * latent_frame * window * size
                + ((self.steps + 1) * latent_frame * window * size if window < frames else 0))
        r = self.image_size
        phases = {
            "DDIM": process_bytes(ddim, self.device),
            "decode": process_bytes(self.decode_live() + self.decode_chunk * r * r * 3 * 9, self.device)
            + ENCODER_BYTES,
        }
        if self.pbnets:
            phases["PBNet"] = process_bytes(self.pbnet_live(frames, approximate), self.device)
        if features and self.feature_model_live is not None:  # + its 50-Hz rows and their 25-Hz copy, float32
            phases["features"] = process_bytes(self.feature_model_live + frames * 3 * self.audio_dim * 4, self.device)
        elif features:
            phases["features"] = process_bytes(FEATURE_BYTES_PER_FRAME * min(frames, FEATURE_CHUNK_FRAMES), "cpu")
        return MemoryEstimate(frames, window, self.device, int(held), phases)

    @staticmethod
    def _largest(fits: Callable[[int, bool], bool], upper: int) -> int:
        """The largest n in [1, upper] with fits(n, approximate) for a monotone `fits` (0 if none): a search on
        approximate estimates, confirmed exactly; when the confirmation fails, an exact bisection from the
        largest fitting grid point, to within 1 s (25 frames) or 5 %."""
        if not fits(1, False):
            return 0
        lo, hi = 1, 2
        while hi < upper and fits(hi, True):
            lo, hi = hi, hi * 2
        hi = min(hi, upper)
        if fits(hi, True):
            lo = hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid, True) else (lo, mid)
        if fits(lo, False):
            return lo
        lo, hi = max([1] + [g for g in SEARCH_GRID if g < lo and fits(g, False)]), lo
        while hi - lo > max(25, lo // 20):
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid, False) else (lo, mid)
        return lo

    def longest(self, budget: int, window: Optional[int] = None, upper: int = 10 ** 7) -> int:
        """The most frames whose estimate fits `budget` (0 if none); `window` as in :meth:`estimate`."""
        return self._largest(lambda n, approximate: self.estimate(n, window, approximate=approximate).peak <= budget,
                             upper)

    def largest_window(self, frames: int, budget: int) -> int:
        """The longest A2V window (frames) that keeps `frames` frames within `budget` (0 if none)."""
        return self._largest(lambda w, approximate: self.estimate(frames, w, approximate=approximate).peak <= budget,
                             frames)


def check_fits(estimate: MemoryEstimate, budget: int, model: MemoryModel, fps: int = 25,
               budget_source: str = "available") -> None:
    """Raise :class:`InsufficientMemory` when `estimate` exceeds `budget`, saying what would fit."""
    if estimate.peak <= budget:
        return
    lines = [f"this generation needs about {estimate.describe()}, but {gib(budget)} is {budget_source} on "
             f"{estimate.device}"]
    if not estimate.windowed:
        longest = model.longest(budget)
        seconds = math.floor(longest / fps * 10) / 10
        lines.append(f"the longest audio that fits in one pass is about {seconds:g} s ({longest} frames): cut it "
                     f"with --max-seconds {seconds:g}" if longest else "not even one frame fits in one pass")
    smallest = model.estimate(estimate.frames, min(fps, estimate.frames), approximate=True)
    if smallest.peak > budget:  # windows do not help: another phase is too large on its own
        phase, need = max(smallest.phases.items(), key=lambda kv: kv[1])
        hint = " (banded PBNet attention: leave out --no-pbnet-banded)" if phase == "PBNet" else ""
        lines.append(f"windows would not help: even with 1 s windows the {phase} phase needs about {gib(need)}"
                     f"{hint}; otherwise free memory or use another device")
    else:
        window = model.largest_window(estimate.frames, budget)
        typical = min(window, 10 * fps)  # 10 s windows: a good default, far below any budget worth the name
        lines.append(f"or generate in windows (cross-faded in latent-flow space: bounded memory, seams possible): "
                     f"--chunk-seconds {typical / fps:g} needs about "
                     f"{gib(model.estimate(estimate.frames, typical, approximate=True).peak)}, windows up to "
                     f"{math.floor(window / fps * 10) / 10:g} s fit")
    raise InsufficientMemory("; ".join(lines), estimate, budget)
