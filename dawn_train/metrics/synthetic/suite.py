"""`SyntheticSuite`: every synthetic-domain metric, beside its trivial baseline, as one object.

Rows of `compute()`:
- "generated": the generated frames;
- "still frame": the source image held for the whole clip (computed from the source only), the
  score any method must beat;
- "LFG ceiling" (when `update` gets the reconstruction): the real clip re-rendered by the LFG from its
  ground-truth motion (encode then decode), the best any A2V-FDM driving this LFG can score;
- "PBNet motion" (when `update_motion` gets PBNet's samples): PoseStd and Blink/s of the pose and blink PBNet
  sampled to drive the clip, read from the signals themselves.  It is PBNet's own output, never a figure of the
  video: it tells whether an unmet natural-motion goal is PBNet's or the video model's;
- "ground truth": the real frames through the same probe: the floor of PoseErr / IdErr (probe
  error when the driving pose is the ground truth), MouthCorr of the probe against the true
  opening, and the real Blink/s (a sanity check of the probe and the blink detector).

Without a probe file the probe metrics are reported as unavailable (None, with the message in
`unavailable`); PSNR and SSIM need no network.
"""
from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from dawn_train.metrics.blink import BlinkRate
from dawn_train.metrics.synthetic.metrics import (
    FrameFidelity,
    HeadMotion,
    IdentityError,
    MouthSync,
    PoseError,
    frames_of,
)
from dawn_train.metrics.synthetic.probe import ProbeReading, SynthProbe
from dawn_train.metrics.synthetic.train import load_probe
from dawn_train.metrics.weights import HoldsFrozenNet, MetricUnavailable

TABLE = ("PSNR", "SSIM", "MouthCorr", "SyncOffset", "SyncConf", "Blink/s", "PoseErr", "PoseStd", "IdErr")
PROBE_METRICS = TABLE[2:]
ROWS = ("generated", "still frame", "LFG ceiling", "PBNet motion", "ground truth")


class SyntheticSuite(HoldsFrozenNet):
    """Args:
        probe: a probe file (`train_probe`), a `SynthProbe`, or None (probe metrics unavailable).
        max_offset: lip-sync offset search range in frames (5).
        chunk: frames per probe call.

    update(generated, real, source, driving_pose, mouth=None, lengths=None):
        generated, real: (B, T, 3, H, W) RGB in [0, 1] (square frames, any size);
        source: (B, 3, H, W), the clip's first real frame that generation started from;
        driving_pose: (B, T, 6) the pose that drove generation (yaw, pitch, roll in degrees first);
        mouth: (B, T) true mouth opening (the dataset's `mouth` labels, or `mouth_from_landmarks`);
            None: the probe's reading of the real frames;
        lengths: (B,) valid frames per clip.
    last_readings: {row: ProbeReading with (B, T, ...) fields} of the last `update` ("generated", "still frame",
        "ground truth", and "LFG ceiling" when given): per-frame readings for traces (`blink_traces`).
    update_motion(pose, blink, lengths=None): the PBNet-sampled driving signals, (B, T, 6) and (B, T, 2).
    compute(): {row: {metric: float | None}} for the rows in ROWS ("LFG ceiling" and "PBNet motion" only when
        given) and the metrics in TABLE.
    """

    def __init__(self, probe: str | Path | SynthProbe | None = None, *, max_offset: int = 5, chunk: int = 256):
        super().__init__()
        self.unavailable: dict[str, str] = {}
        if not isinstance(probe, SynthProbe):
            try:
                probe = load_probe(probe)
            except MetricUnavailable as exc:
                probe = None
                self.unavailable = {name: str(exc) for name in PROBE_METRICS}
        self.hold(probe)  # outside the module tree: not in checkpoints, never in train mode
        self.chunk = chunk
        self.rows = nn.ModuleDict()
        self.has_ceiling = self.has_motion = False
        self.last_readings: dict[str, ProbeReading] = {}
        for row in ROWS:
            if row == "PBNet motion":  # read from the signals: no frames, no probe
                self.rows[row.replace(" ", "_")] = nn.ModuleDict({"blink": BlinkRate(), "motion": HeadMotion()})
                continue
            metrics = nn.ModuleDict() if row == "ground truth" else nn.ModuleDict({"fidelity": FrameFidelity()})
            if probe is not None:
                metrics.update({"sync": MouthSync(max_offset=max_offset), "blink": BlinkRate(),
                                "pose": PoseError(), "motion": HeadMotion(), "identity": IdentityError()})
            self.rows[row.replace(" ", "_")] = metrics

    @property
    def probe(self) -> SynthProbe | None:
        return self.net

    def read(self, videos: Tensor) -> ProbeReading:
        """(B, T, 3, H, W) -> reading with (B, T, ...) fields."""
        b = videos.shape[0]
        reading = self.probe(frames_of(videos), chunk=self.chunk)
        return ProbeReading(**{k: rearrange(v, "(b t) ... -> b t ...", b=b) for k, v in reading.as_dict().items()})

    @torch.no_grad()
    def update(self, generated: Tensor, real: Tensor, source: Tensor, driving_pose: Tensor,
               mouth: Tensor | None = None, lengths: Tensor | None = None,
               reconstruction: Tensor | None = None) -> ProbeReading | None:
        """`reconstruction` (B, T, 3, H, W): the real clip decoded by the LFG from its ground-truth motion (the
        "LFG ceiling" row; give it for every update or never).  Returns the probe's reading of the generated
        frames ((B, T, ...) fields; None without a probe), so a caller can measure more on them (head motion for
        BAS, eye openness for Blink/s)."""
        if generated.ndim != 5 or generated.shape != real.shape:
            raise ValueError(f"expected generated and real videos (B, T, 3, H, W) of one shape, got "
                             f"{tuple(generated.shape)} and {tuple(real.shape)}")
        b, t = generated.shape[:2]
        if source.shape != (b, *generated.shape[2:]) or driving_pose.shape[:2] != (b, t):
            raise ValueError(f"expected source (B, 3, H, W) and driving_pose (B, T, 6) for videos "
                             f"{tuple(generated.shape)}, got {tuple(source.shape)} and {tuple(driving_pose.shape)}")
        still = source[:, None].expand_as(real)
        self.rows["generated"]["fidelity"].update(generated, real, lengths)
        self.rows["still_frame"]["fidelity"].update(still, real, lengths)
        if reconstruction is not None:
            self.has_ceiling = True
            self.rows["LFG_ceiling"]["fidelity"].update(reconstruction, real, lengths)
        if self.probe is None:
            return None
        read_source = self.probe(source, chunk=self.chunk)  # (B, ...)
        readings = {
            "generated": self.read(generated),
            "still_frame": ProbeReading(**{k: v[:, None].expand(b, t, *v.shape[1:])
                                           for k, v in read_source.as_dict().items()}),
            "ground_truth": self.read(real),
        }
        if reconstruction is not None:
            readings["LFG_ceiling"] = self.read(reconstruction)
        self.last_readings = {row.replace("_", " "): reading for row, reading in readings.items()}
        reference = readings["ground_truth"].mouth if mouth is None else mouth.to(generated.device)
        for row, reading in readings.items():
            metrics = self.rows[row]
            metrics["sync"].update(reading.mouth, reference, lengths)
            metrics["blink"].update(reading.eyes, lengths)
            metrics["pose"].update(reading.pose, driving_pose.to(reading.pose.device), lengths)
            metrics["motion"].update(reading.pose, lengths)
            metrics["identity"].update(reading.identity, read_source.identity, lengths)
        return readings["generated"]

    @torch.no_grad()
    def update_motion(self, pose: Tensor, blink: Tensor, lengths: Tensor | None = None) -> None:
        """pose (B, T, 6) (angles in degrees first) and blink (B, T, 2) eye openness, as PBNet sampled them."""
        if pose.ndim != 3 or blink.shape[:2] != pose.shape[:2]:
            raise ValueError(f"expected pose (B, T, 6) and blink (B, T, 2), got {tuple(pose.shape)} and "
                             f"{tuple(blink.shape)}")
        self.has_motion = True
        self.rows["PBNet_motion"]["motion"].update(pose, lengths)
        self.rows["PBNet_motion"]["blink"].update(blink, lengths)

    def compute(self) -> dict[str, dict[str, float | None]]:
        out = {}
        for row in ROWS:
            if (row == "LFG ceiling" and not self.has_ceiling) or (row == "PBNet motion" and not self.has_motion):
                continue
            values: dict[str, float | None] = {name: None for name in TABLE}
            metrics = self.rows[row.replace(" ", "_")]
            if row == "PBNet motion":
                values.update({"Blink/s": float(metrics["blink"].compute()),
                               "PoseStd": float(metrics["motion"].compute())})
                out[row] = values
                continue
            if "fidelity" in metrics:
                values.update({k: float(v) for k, v in metrics["fidelity"].compute().items()})
            if "sync" in metrics:
                # None (n/a) when no clip was long enough for the lip-sync offset search
                values.update({k: None if v.isnan() else float(v) for k, v in metrics["sync"].compute().items()})
                values["Blink/s"] = float(metrics["blink"].compute())
                values["PoseErr"] = float(metrics["pose"].compute().mean())
                values["PoseStd"] = float(metrics["motion"].compute())
                values["IdErr"] = float(metrics["identity"].compute())
            out[row] = values
        return out

    def reset(self) -> None:
        self.has_ceiling = self.has_motion = False
        self.last_readings = {}
        for metrics in self.rows.values():
            for metric in metrics.values():
                metric.reset()
