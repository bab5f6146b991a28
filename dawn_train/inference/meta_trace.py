"""Peak bytes of the tensors a module call creates, traced on the meta device: shapes and dtypes only, no
arithmetic and no memory.  The torch phases of the pre-flight memory estimate (`inference/memory.py`) come from
here, so the estimate follows the actual models instead of formulas.

:func:`live_tensor_peak` swaps the module's weights for meta twins (and back), runs the method under a torch
dispatch mode that counts tensor storages while they are referenced, and memoises the peak by architecture
(:func:`architecture`) and input shapes: in the process, and on disk (:func:`cache_dir`) for the next process.  A
trace runs the model op by op through torch's Python meta kernels (the release UNet over 250 frames: ~15,000 ops,
2 s on a CPU), which on a GPU is as long as the generation of a short clip; each `dawn-train generate` is a new
process, so only the disk memo spares the second one that cost.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import weakref
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created under it while they are referenced; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage id -> [tensors referencing it, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self._refs:
                    self._refs[key] = [0, storage.nbytes()]
                    self.live += storage.nbytes()
                self._refs[key][0] += 1
                weakref.finalize(tensor, self._release, key)
        self.peak = max(self.peak, self.live)
        return out

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]


@contextmanager
def _weights_on_meta(module: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer of `module` for a meta tensor of the same shape and dtype (shared ones
    stay shared), restore them on exit: the real weights are neither copied nor touched."""
    swapped, twins = [], {}
    for sub in module.modules():  # each module once, also when it is reachable by several names
        for table in (sub._parameters, sub._buffers):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                if id(tensor) not in twins:
                    twin = torch.empty_like(tensor, device="meta")
                    twins[id(tensor)] = nn.Parameter(twin, tensor.requires_grad) if isinstance(tensor, nn.Parameter) \
                        else twin
                swapped.append((table, name, tensor))
                table[name] = twins[id(tensor)]
    try:
        yield
    finally:
        for table, name, tensor in swapped:
            table[name] = tensor


def meta_like(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def architecture(module: nn.Module) -> tuple:
    """What a trace of `module` depends on: every submodule's type and plain settings (window sizes, flags,
    train/eval mode) and every parameter's and buffer's shape and dtype.  Equal for equally built modules."""
    plain = (bool, int, float, str, type(None))
    parts = []
    for name, sub in module.named_modules(remove_duplicate=False):
        settings = tuple(sorted((k, v) for k, v in vars(sub).items() if not k.startswith("_") and (
            isinstance(v, plain) or (isinstance(v, tuple) and all(isinstance(x, plain) for x in v)))))
        tensors = tuple((k, tuple(t.shape), str(t.dtype)) for table in (sub._parameters, sub._buffers)
                        for k, t in table.items() if t is not None)
        parts.append((name, f"{type(sub).__module__}.{type(sub).__qualname__}", settings, tensors))
    return tuple(parts)


class _Traced:
    """A module, method and input shapes, equal (and hashed) by architecture: the key of the trace memo
    (it holds the module weakly, so the memo never keeps a model alive)."""

    def __init__(self, module: nn.Module, method: str, inputs: tuple) -> None:
        self.module, self.key = weakref.ref(module), (architecture(module), method, inputs)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Traced) and self.key == other.key


def cache_dir() -> Optional[Path]:
    """Where traces are kept between processes: $DAWN_TRAIN_CACHE (a folder; empty or `off`: nowhere), else
    $XDG_CACHE_HOME/dawn_train, else ~/.cache/dawn_train."""
    value = os.environ.get("DAWN_TRAIN_CACHE")
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "false", "no") else Path(value).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "dawn_train"
    try:
        return Path.home() / ".cache" / "dawn_train"
    except RuntimeError:  # no home directory to be found (a bare container user): trace in every process
        return None


@lru_cache(maxsize=1)
def code_version() -> Optional[str]:
    """A digest of what a trace's result depends on besides its key: the versions of torch and einops and the
    source of the code the trace runs (every model module, this module); None where that source cannot be read
    (then nothing is kept on disk).  Any edit of that code starts a new set of disk entries."""
    import einops

    import dawn_train.models

    digest = hashlib.sha256(f"torch {torch.__version__}, einops {einops.__version__}".encode())
    package = Path(dawn_train.models.__file__).parent.parent
    sources = sorted((package / "models").rglob("*.py")) + [Path(__file__)]
    try:
        for path in sources:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    except (OSError, ValueError):
        return None
    return digest.hexdigest() if len(sources) > 1 else None


def _disk_entry(traced: _Traced) -> Optional[Path]:
    """The entry of `traced` on disk, None when none is kept: no cache folder, unreadable model source, or a
    module with parts from other libraries (HuBERT from transformers: its attention kernel is chosen by a config
    object and its code has its own versions, neither of which the key holds; traced in every process)."""
    folder, version, module = cache_dir(), code_version(), traced.module()
    if folder is None or version is None or module is None:
        return None
    if any(not type(sub).__module__.startswith(("dawn_train.", "torch.")) for sub in module.modules()):
        return None
    key = hashlib.sha256(f"{version}\n{traced.key!r}".encode()).hexdigest()
    return folder / "meta_traces" / version[:16] / f"{key}.json"  # a folder per code version: old ones go (_prune)


def _read(entry: Optional[Path]) -> Optional[int]:
    try:
        peak = json.loads(entry.read_text())["peak"] if entry is not None else None
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or torn: trace again
        return None
    return peak if isinstance(peak, int) and peak >= 0 else None


STALE_VERSION_DAYS = 14  # another code version's folder unused this long: a checkout long gone
STALE_TEMPORARY_S = 3600  # a temporary file this old: its writer was killed before renaming it
_pruned: set[Path] = set()  # trace folders this process pruned
_marked_used: set[Path] = set()  # version folders this process read from (their mtime refreshed once)


def _prune(traces: Path, version_folder: Path) -> None:
    """Remove from `traces` what no process will read: the folders of other code versions unused for
    STALE_VERSION_DAYS (each edit of the models starts a folder; a read or write marks a folder used) and stale
    temporary files.  Once per process and
    folder, at its first write; a file another process removes first, or one that cannot be removed, is left."""
    if traces in _pruned:
        return
    _pruned.add(traces)
    now = time.time()
    try:
        folders = [f for f in traces.iterdir() if f.is_dir()]
    except OSError:
        return
    for folder in folders:
        try:
            if folder != version_folder and now - folder.stat().st_mtime > STALE_VERSION_DAYS * 86400:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            for temporary in folder.glob("*.tmp"):
                if now - temporary.stat().st_mtime > STALE_TEMPORARY_S:
                    temporary.unlink(missing_ok=True)
        except OSError:
            pass


def _write(entry: Optional[Path], traced: _Traced, peak: int) -> None:
    """Keep `peak` at `entry`, written whole or not at all (a temporary file renamed: ranks tracing at once
    write the same value); a folder that cannot be written only means the next process traces again."""
    if entry is None:
        return
    _, method, inputs = traced.key
    written = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _prune(entry.parent.parent, entry.parent)
        with tempfile.NamedTemporaryFile("w", dir=entry.parent, suffix=".tmp", delete=False) as handle:
            written = Path(handle.name)
            json.dump({"peak": peak, "method": method, "inputs": inputs}, handle)
        written.chmod(0o644)  # readable by others sharing the folder (a temporary file is private)
        os.replace(written, entry)
    except OSError:
        try:
            if written is not None:
                written.unlink(missing_ok=True)
        except OSError:
            pass


@lru_cache(maxsize=256)
def _trace(traced: _Traced) -> int:
    entry = _disk_entry(traced)
    peak = _read(entry)
    if peak is not None and entry.parent not in _marked_used:  # read only: mark the version in use for `_prune`
        _marked_used.add(entry.parent)
        try:
            os.utime(entry.parent)
        except OSError:
            pass
    if peak is None:
        peak = _run(traced)
        _write(entry, traced, peak)
    return peak


def _run(traced: _Traced) -> int:
    _, method, inputs = traced.key
    tensors = [meta_like(shape, getattr(torch, dtype.removeprefix("torch."))) for shape, dtype in inputs]
    mode = _LiveBytes()
    module = traced.module()
    with torch.no_grad(), _weights_on_meta(module), mode:
        out = getattr(module, method)(*tensors)
    del out
    return mode.peak


def live_tensor_peak(module: nn.Module, method: str, *shapes: Sequence[int] | Tensor,
                     dtype: Optional[torch.dtype] = None) -> int:
    """Peak bytes of the tensors that `module.<method>(*inputs)` creates, traced on the meta device (no
    arithmetic, no allocation; the module's own weights are swapped out and back, not copied).  `shapes`: input
    shapes (float inputs of the module's dtype, or `dtype`) or meta tensors (their shape and dtype are used).
    Inputs are not counted.  A trace is a pure function of the architecture (:func:`architecture`), the input
    shapes and the code (:func:`code_version`), so it is memoised, also on disk: a second generation with the
    same models, in this process or the next, costs nothing."""
    first = next(module.parameters(), None)
    dtype = dtype or (first.dtype if first is not None else torch.float32)
    inputs = tuple((tuple(s.shape), str(s.dtype)) if isinstance(s, Tensor) else (tuple(s), str(dtype)) for s in shapes)
    return _trace(_Traced(module, method, inputs))
