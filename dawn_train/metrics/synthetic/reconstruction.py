"""`ReconstructionProbe`: how much of the mouth, the eyes and the head pose an LFG carries from the driving frame
into its reconstruction, read off the frames by the synthetic probe, beside the source frame (what copying the
source scores).  The LFG's validation logs it every epoch, so a run shows whether its latent motion holds what
A2V-FDM must later generate: a reconstruction loss that falls says little about a mouth that covers 1 % of the
frame (a 4-region LFG halved its L1 and still rendered every mouth closed).

    metric = ReconstructionProbe("runs/synth_probe.pt")
    metric.update(reconstruction, driving, source)    # (B, 3, H, W) each, in [0, 1]
    metric.compute()  # {"synth/MouthCorr": ..., "synth/EyeCorr": ..., "synth/PoseErr": ..., "synth_still/PoseErr": ...}

The reference is the probe's reading of the real driving frame (its mouth R^2 on real frames is ~0.99), so the
metric needs no labels and scores any pair stream; correlations are over all validation pairs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from dawn_train.metrics.synthetic.metrics import PoseError
from dawn_train.metrics.synthetic.probe import SynthProbe
from dawn_train.metrics.synthetic.train import load_probe
from dawn_train.metrics.weights import Float64Metric, HoldsFrozenNet


class Correlation(Float64Metric):
    """Pearson correlation of two series from their running sums (one pass, summed across ranks); 0 when either
    series is constant (a mouth that never moves follows nothing)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("n", "x", "y", "xx", "yy", "xy"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor, y: Tensor) -> None:
        x, y = x.double().flatten(), y.double().flatten()
        self.n += x.numel()
        self.x += x.sum()
        self.y += y.sum()
        self.xx += (x * x).sum()
        self.yy += (y * y).sum()
        self.xy += (x * y).sum()

    def compute(self) -> Tensor:
        n = self.n.clamp(min=1)
        cov = self.xy / n - self.x / n * self.y / n
        var_x, var_y = self.xx / n - (self.x / n) ** 2, self.yy / n - (self.y / n) ** 2
        if var_x <= 1e-12 or var_y <= 1e-12:
            return torch.zeros((), dtype=torch.float64, device=cov.device)
        return cov / (var_x * var_y).sqrt()


class ReconstructionProbe(HoldsFrozenNet):
    """Args: probe: a probe file (`dawn-train data probe`) or a `SynthProbe`.

    update(reconstruction, driving, source): (B, 3, H, W) in [0, 1]; the LFG's output, its target and its input.
    compute():
        synth/MouthCorr, synth/EyeCorr: correlation of the change from the source that the probe reads off the
            reconstruction with the change it reads off the driving frame (mouth opening; openness of both eyes).
            Changes, not values, so an identity's resting eye size counts for nothing; copying the source scores 0.
        synth/PoseErr, synth_still/PoseErr: mean |yaw, pitch, roll| difference (deg) from the driving frame of the
            reconstruction and of the source frame (the baseline).
    """

    def __init__(self, probe: str | Path | SynthProbe):
        super().__init__()
        self.hold(probe if isinstance(probe, SynthProbe) else load_probe(probe))
        self.metrics = nn.ModuleDict({"synth/MouthCorr": Correlation(), "synth/EyeCorr": Correlation(),
                                      "synth/PoseErr": PoseError(), "synth_still/PoseErr": PoseError()})

    @torch.no_grad()
    def update(self, reconstruction: Tensor, driving: Tensor, source: Tensor) -> None:
        if not reconstruction.shape == driving.shape == source.shape or reconstruction.ndim != 4:
            raise ValueError(f"expected reconstruction, driving and source frames (B, 3, H, W) of one shape, got "
                             f"{tuple(reconstruction.shape)}, {tuple(driving.shape)} and {tuple(source.shape)}")
        rec, real, src = (self.net(frames.float().clamp(0, 1)) for frames in (reconstruction, driving, source))
        self.metrics["synth/MouthCorr"].update(rec.mouth - src.mouth, real.mouth - src.mouth)
        self.metrics["synth/EyeCorr"].update(rec.eyes - src.eyes, real.eyes - src.eyes)
        self.metrics["synth/PoseErr"].update(rec.pose[None], real.pose[None])  # the pairs as one (1, B) clip
        self.metrics["synth_still/PoseErr"].update(src.pose[None], real.pose[None])

    def compute(self) -> dict[str, float]:
        # PoseError gives the (yaw, pitch, roll) errors: their mean, as SyntheticSuite reports PoseErr
        return {name: float(metric.compute().mean()) for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
