"""The paper's Table 1 metrics as one object, for `dawn-train eval` and the A2V stage's validation.

A metric whose network weights are not given or not found is reported as unavailable (with the
message saying what file to get), never computed with random weights.  BAS and Blink/s need no
network and are always available.

Inputs per batch: generated and real videos (B, T, 3, H, W) in [0, 1], the source image
(B, 3, H, W), the 16 kHz audio (B, L), the real videos' pose (B, T, 6) and eye openness (B, T, 2)
annotations, and, when something measured them ON THE GENERATED FRAMES (the synthetic probe,
`metrics/synthetic`; a landmarker/pose estimator on real data), the generated videos' pose and eye
openness.  Without such a measurement, BAS and Blink/s of the generated videos are not computed
(None, with the reason in `unavailable`): the signals that drove the generation say nothing about
whether the video follows them, so they are never reported as the checkpoint's.
"""
from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from dawn_train.metrics.bas import BAS
from dawn_train.metrics.blink import BlinkRate
from dawn_train.metrics.csim import CSIM
from dawn_train.metrics.fid import FID
from dawn_train.metrics.fvd import FVD
from dawn_train.metrics.sync import LSE
from dawn_train.metrics.weights import MetricUnavailable

# Table 1 order; "weights" names the key of the weight-path dict each metric needs.
TABLE = ("FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM", "BAS", "Blink/s")
NOT_MEASURED = {
    "BAS": "BAS of the generated videos needs their head motion measured on the generated frames (synthetic data: "
           "--probe FILE; real data: the prep pose estimator); the driving pose is not the checkpoint's output",
    "Blink/s": "Blink/s of the generated videos needs eye openness measured on the generated frames (synthetic "
               "data: --probe FILE; real data: the prep landmarker); the driving blinks are not the checkpoint's output",
}
WEIGHT_KEYS = {"FID": "fid", "FVD16": "i3d", "FVD32": "i3d", "LSE": "syncnet", "CSIM": "arcface"}  # metric -> weights


class MetricSuite(nn.Module):
    """Args:
        weights: {"fid": path, "i3d": path, "syncnet": path, "arcface": path}; missing -> unavailable.
        names: metrics to compute (default: all of Table 1)."""

    def __init__(self, weights: dict[str, str | None] | None = None, names: tuple[str, ...] = TABLE):
        super().__init__()
        weights = weights or {}
        unknown = sorted(set(names) - set(TABLE))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(TABLE)}")
        self.names = tuple(names)
        self.unavailable: dict[str, str] = {}
        builders = {"FID": FID, "FVD16": partial(FVD, clip_len=16), "FVD32": partial(FVD, clip_len=32), "LSE": LSE,
                    "CSIM": CSIM}
        wanted = {"LSE" if n.startswith("LSE") else n for n in self.names} - {"BAS", "Blink/s"}
        self.generated, self.real = nn.ModuleDict(), nn.ModuleDict()
        for name in sorted(wanted):
            try:
                self.generated[name.replace("/", "_")] = builders[name](weights.get(WEIGHT_KEYS[name]))
            except MetricUnavailable as exc:
                self.unavailable[name] = str(exc)
        if "LSE" in self.generated:  # the sync of the real videos is the reference row
            self.real["LSE"] = LSE(weights.get(WEIGHT_KEYS["LSE"]))
        for side in (self.generated, self.real):
            side["BAS"] = BAS()
            side["Blink_s"] = BlinkRate()
        self.measured: set[str] = set()  # of BAS, Blink/s: measured on generated frames in some update

    def update(self, generated: Tensor, real: Tensor, source: Tensor, audio: Tensor, real_pose: Tensor,
               real_blink: Tensor, generated_pose: Tensor | None = None, generated_blink: Tensor | None = None) -> None:
        """generated_pose (B, T, 6) / generated_blink (B, T, 2): measured on the generated frames, or None."""
        frames = generated.shape[1]
        for name, metric in self.generated.items():
            if name in ("FID", "FVD16", "FVD32"):
                if name.startswith("FVD") and frames < metric.clip_len:
                    continue  # clips shorter than the I3D window do not count (say so in the report)
                metric.update(generated, real=False)
                metric.update(real, real=True)
            elif name == "LSE":
                metric.update(generated, audio)
                self.real["LSE"].update(real, audio)
            elif name == "CSIM":
                metric.update(source, generated)
        if generated_pose is not None:
            self.generated["BAS"].update(generated_pose, audio)
            self.measured.add("BAS")
        if generated_blink is not None:
            self.generated["Blink_s"].update(generated_blink)
            self.measured.add("Blink/s")
        self.real["BAS"].update(real_pose, audio)
        self.real["Blink_s"].update(real_blink)

    def compute(self) -> dict[str, dict[str, float | None]]:
        """{"generated": {metric: value}, "ground truth": {metric: value}}; None = unavailable or n/a."""
        rows = {"generated": {}, "ground truth": {}}
        for row, side in (("generated", self.generated), ("ground truth", self.real)):
            values = {}
            for name, metric in side.items():
                label = name.replace("Blink_s", "Blink/s")
                if row == "generated" and label in NOT_MEASURED:
                    if label not in self.measured:
                        if label in self.names:
                            self.unavailable[label] = NOT_MEASURED[label]
                        continue
                    self.unavailable.pop(label, None)
                if name.startswith("FVD") and int(metric.real_n) == 0:
                    continue
                if name == "BAS" and int(metric.n) == 0:
                    continue  # no head-motion beats in any clip (too short): not a score of 0
                result = metric.compute()
                if name == "LSE":
                    values["LSE-C"], values["LSE-D"] = float(result["lse_c"]), float(result["lse_d"])
                else:
                    values[name.replace("Blink_s", "Blink/s")] = float(result)
            rows[row] = {name: values.get(name) for name in self.names}
        if "CSIM" in rows["ground truth"]:
            rows["ground truth"]["CSIM"] = 1.0 if "CSIM" in self.generated else None  # a face vs itself
        return rows

    def reset(self) -> None:
        self.measured.clear()
        for side in (self.generated, self.real):
            for metric in side.values():
                metric.reset()
