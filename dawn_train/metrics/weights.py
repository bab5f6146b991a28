"""Loading a metric network's weights from a user-supplied file: strict, checksummed, never random.

Every metric network is described by a `WeightSpec` (file name, layout, where to get it, known
sha256). `load_weights` checks that the file exists, unwraps the usual containers, compares every
name and shape with the module before loading (nanoGPT `from_pretrained` style) and reports the
file's sha256. A missing file raises `MetricUnavailable` with a message that says what to fetch;
a metric is never computed with random weights.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric

log = logging.getLogger(__name__)

# BatchNorm's step counter is not used in eval mode and is absent from files saved by torch < 0.4.1
# (syncnet_v2.model, for example): a missing counter is filled from the module, never an error.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
WRAPPER_KEYS = ("state_dict", "model", "net", "module")


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed because its network weights are not available."""


@dataclass(frozen=True)
class WeightSpec:
    """What a metric network's weight file is and where to get it."""

    metric: str  # e.g. "FID"
    filename: str  # the reference release's file name
    layout: str  # what the file holds (state dict of which architecture)
    source: str  # where to get it
    sha256: str | None = None  # full digest or a prefix (torch hub names carry the first 8 hex digits)

    def unavailable(self, path: str | Path | None, why: str) -> MetricUnavailable:
        return MetricUnavailable(
            f"metric unavailable: {self.metric}: {why} (path={str(path)!r}). Expected file "
            f"{self.filename!r}: {self.layout}. Get it from {self.source}; then pass its path "
            f"explicitly (see dawn_train/metrics/README.md)."
        )


@dataclass(frozen=True)
class WeightReport:
    path: str
    sha256: str
    expected_sha256: str | None
    num_tensors: int
    filled: tuple[str, ...]  # optional buffers taken from the module because the file lacks them

    @property
    def checksum_ok(self) -> bool | None:
        if self.expected_sha256 is None:
            return None
        return self.sha256.startswith(self.expected_sha256.lower())


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve(path: str | Path | None, spec: WeightSpec) -> Path:
    """Return `path` as an existing file, or raise `MetricUnavailable` naming what is expected."""
    if path is None or str(path) == "":
        raise spec.unavailable(path, "no weight file given")
    path = Path(path).expanduser()
    if not path.is_file():
        raise spec.unavailable(path, "weight file not found")
    return path


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Take the tensor dict out of common checkpoint containers and strip a DataParallel prefix."""
    while isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    state = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], *, what: str) -> tuple[str, ...]:
    """Compare names and shapes with `module`; raise `ValueError` listing every difference.

    Returns the optional buffers (`num_batches_tracked`) missing from `state`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    filled = tuple(k for k in missing if k.endswith(OPTIONAL_SUFFIXES))
    missing = [k for k in missing if k not in filled]
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def head(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8})" if len(items) > 8 else "")
        raise ValueError(
            f"{what}: state dict does not match the architecture "
            f"({len(state)} tensors in file, {len(own)} in model). missing: [{head(missing)}]; "
            f"unexpected: [{head(unexpected)}]; shape mismatches: [{head(shapes)}]"
        )
    return filled


def load_weights(module: nn.Module, path: str | Path | None, spec: WeightSpec) -> WeightReport:
    """Load `path` into `module` strictly (names and shapes checked first), return a checksum report.

    Raises `MetricUnavailable` when the file is missing, `ValueError` when it does not match."""
    path = resolve(path, spec)
    state = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    filled = check_state_dict(module, state, what=f"{spec.metric} weights {path}")
    own = module.state_dict()
    module.load_state_dict({**state, **{k: own[k] for k in filled}}, strict=True)
    report = WeightReport(str(path), sha256_of(path), spec.sha256, len(state), filled)
    if report.checksum_ok is False:
        log.warning("%s: %s has sha256 %s, the reference release has %s...; scores may not be "
                    "comparable with published numbers", spec.metric, path, report.sha256, spec.sha256)
    else:
        log.info("%s: loaded %d tensors from %s (sha256 %s)", spec.metric, len(state), path, report.sha256)
    return report


class Float64Metric(Metric):
    """A Metric whose floating-point states stay float64 whatever `.to(dtype)` a parent applies
    (torchmetrics guards `.half()` and friends but not `.to(torch.float16)`, which Lightning's
    true-half precision uses); device moves go through."""

    is_differentiable = False
    full_state_update = False

    def _apply(self, fn, *args, **kwargs):
        this = super()._apply(fn, *args, **kwargs)
        for key, default in this._defaults.items():
            if isinstance(default, torch.Tensor) and default.is_floating_point():
                this._defaults[key] = default.double()
                setattr(this, key, getattr(this, key).double())
        return this


class HoldsFrozenNet(nn.Module):
    """Mixin for a module that runs a frozen network (`self.net`) kept outside its module tree on purpose:
    its weights come from a weight file, so they are not written into every Lightning checkpoint, and a
    parent's `.train()` cannot switch its BatchNorm layers to batch statistics.  `.to()` and friends still
    move it with the module (device only: it stays float32)."""

    def hold(self, net: nn.Module | None) -> None:
        if net is not None:
            net.eval().requires_grad_(False)
        self._net_holder = [net]

    @property
    def net(self) -> nn.Module | None:
        return self._net_holder[0]

    def _apply(self, fn, *args, **kwargs):
        this = super()._apply(fn, *args, **kwargs)
        if self.net is not None:
            self.net._apply(fn)
            self.net.float()
        return this


class NetworkMetric(HoldsFrozenNet, Float64Metric):
    """A Metric that runs a frozen reference network (`HoldsFrozenNet`)."""

    def __init__(self, net: nn.Module | None, **kwargs):
        super().__init__(**kwargs)
        self.hold(net)

    def net_device(self) -> torch.device:
        return next(self.net.parameters()).device
