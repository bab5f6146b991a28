"""torch.compile for a module's training forward, with the eager forward as the fallback.

Why only training calls: the train step is where a GPU spends its time, and on one it is bound by launches and
memory traffic, not arithmetic (docs/performance.md, "On a GPU": 12,300 kernels of ~15 us for one release-size
A2V-FDM step, the GPU busy 45 % of the wall time).  A compiled UNet fuses the norms, casts and element-wise kernels:
2.0x samples/s there.  Validation and sampling (no grad, eval mode, the banded window) keep the eager forward, so
they neither pay a second compilation nor trace the sampling loop's shapes.

Where compilation fails (no C++ compiler or Triton, an operator the compiler cannot lower), training goes on eagerly
after one warning that names the reason, instead of losing the run.  torch compiles the backward graph lazily, at the
first backward, outside any call of ours; here it is compiled with the forward (AOTAutograd's non-lazy lowering), so a
failure there falls back too.  What dynamo raises unwrapped (an internal assertion, a guard on a data-dependent
value) is not a compilation failure it reports, and stops the run with torch's message.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
from torch import nn

from dawn_train.log import get_logger

log = get_logger(__name__)


class CompiledForward:
    """Stands in for `module.forward`: training calls (grad enabled, module in train mode) go through
    `torch.compile(forward, backend=backend, mode=mode)`; every other call, and every call after a failed
    compilation, goes to the eager forward.  `failure` holds the reason once compilation failed."""

    def __init__(self, module: nn.Module, backend: str | Callable = "inductor", mode: Optional[str] = None,
                 name: str = "module"):
        self.module, self.name = module, name
        # the class's function, the module passed at each call: a deep copy of the module (and this wrapper with
        # it) then computes with the copy's weights, not the original's
        self.function = type(module).forward
        self.compiled = torch.compile(self.function, backend=backend, mode=mode)
        self.failure: Optional[str] = None
        self.calls = 0  # training calls that ran compiled

    def __call__(self, *args, **kwargs):
        if self.failure is not None or not (self.module.training and torch.is_grad_enabled()):
            return self.function(self.module, *args, **kwargs)
        try:
            with backward_compiled_with_forward():
                out = self.compiled(self.module, *args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as exc:  # the compiler failed, or traced an error of the code
            self.failure = reason(exc)
            log.warning("torch.compile of the %s failed (%s); training continues without compile", self.name,
                        self.failure)
            return self.function(self.module, *args, **kwargs)  # an error of the code itself is raised here again
        self.calls += 1
        return out


def backward_compiled_with_forward():
    """A context in which AOTAutograd compiles the backward graph together with the forward one (torch's
    `force_non_lazy_backward_lowering`; a no-op on a torch without it)."""
    from torch._functorch import config

    if not hasattr(config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


def reason(exc: BaseException) -> str:
    """One line for a compilation failure: the backend's own error, which torch wraps (`inner_exception`)."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0][:300] if lines else ''}"


def compile_forward(module: nn.Module, backend: str | Callable = "inductor", mode: Optional[str] = None,
                    name: str = "module") -> CompiledForward:
    """Install a :class:`CompiledForward` as `module.forward` (an instance attribute: parameters, state-dict keys
    and checkpoints are unchanged) and return it.  While it is installed the module object itself cannot be
    pickled (its state dict can): A2VStage installs it for the fit only."""
    restore_forward(module)
    wrapper = CompiledForward(module, backend, mode, name)
    module.forward = wrapper
    return wrapper


def restore_forward(module: nn.Module) -> None:
    """Put the class's eager forward back (a no-op when none was installed)."""
    if isinstance(module.__dict__.get("forward"), CompiledForward):
        del module.forward
