"""The compiled training forward (`stages/compiled.py`): training calls run the graph torch.compile built and compute
what the eager UNet computes; eval and no-grad calls stay eager; a backend that fails leaves training eager after one
warning.  Backends here are real torch.compile backends: one that records the graphs it is given and runs them as
they are (inductor's code generation takes minutes on 2 cores; `tests/models/a2v/test_compiled.py` checks it), and
one that fails as a missing compiler does."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from dawn_train.models.a2v import Unet3D
from dawn_train.stages.compiled import CompiledForward, compile_forward, restore_forward

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(dim=8, dim_mults=(1,), channels=3 + 5, cond_aud=4, cond_pose=3, cond_eye=2, attn_heads=2,
            attn_dim_head=4, init_kernel_size=3, resnet_groups=4, window_size=4)


def recording(graphs: list):
    def backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward
    return backend


def missing_compiler(gm, example_inputs):
    raise RuntimeError("no working C++ compiler found (set CXX)")


def failing_backward_compiler(gm, example_inputs):
    raise RuntimeError("cannot lower the backward graph")


# AOTAutograd's forward graph run as it is, its backward graph refused: a failure torch meets lazily, at the first
# backward, unless the wrapper compiles the backward with the forward
failing_backward = aot_autograd(fw_compiler=lambda gm, example_inputs: make_boxed_func(gm.forward),
                                bw_compiler=failing_backward_compiler)


def inputs(frames: int = 6):
    g = torch.Generator().manual_seed(0)
    return dict(x=torch.randn(2, 3, frames, 8, 8, generator=g), time=torch.tensor([3, 700]),
                cond=torch.randn(2, frames, 9, generator=g), context=torch.randn(2, 5, 8, 8, generator=g))


def train_call(unet, batch):
    out = unet(batch["x"], batch["time"], batch["cond"], null_cond_prob=0.0, context=batch["context"])
    out.square().mean().backward()
    return out.detach()


@pytest.fixture
def unets():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = Unet3D(**TINY).train()
    yield eager, copy.deepcopy(eager)
    torch._dynamo.reset()


def test_training_calls_run_the_compiled_graph_and_equal_eager(unets):
    eager, compiled = unets
    graphs = []
    wrapper = compile_forward(compiled, recording(graphs), name="UNet")
    batch = inputs()
    torch.testing.assert_close(train_call(compiled, batch), train_call(eager, batch), rtol=1e-5, atol=1e-6)
    assert graphs and wrapper.calls == 1 and wrapper.failure is None
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)

    # a deep copy of the compiled module trains its own weights (the wrapper is copied with it)
    twin = copy.deepcopy(compiled)
    twin.zero_grad(set_to_none=True)
    compiled.zero_grad(set_to_none=True)
    train_call(twin, batch)
    assert all(p.grad is None for p in compiled.parameters())
    assert any(p.grad is not None for p in twin.parameters())

    traced = len(graphs)  # validation and sampling calls go to the eager forward: nothing more is traced
    with torch.no_grad():
        expected = eager.eval()(batch["x"], batch["time"], batch["cond"], context=batch["context"])
        out = compiled.eval()(batch["x"], batch["time"], batch["cond"], context=batch["context"])
    torch.testing.assert_close(out, expected)
    assert len(graphs) == traced

    # the state dict is the plain module's, and restoring leaves the class's forward
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    restore_forward(compiled)
    assert "forward" not in compiled.__dict__ and not isinstance(compiled.forward, CompiledForward)


@pytest.mark.parametrize("backend, says", [(missing_compiler, "no working C++ compiler"),
                                           (failing_backward, "cannot lower the backward graph")],
                         ids=["forward", "backward"])
def test_a_failing_compiler_leaves_training_eager_after_one_warning(unets, caplog, backend, says):
    eager, compiled = unets
    wrapper = compile_forward(compiled, backend, name="A2V-FDM UNet")
    batch = inputs()
    with caplog.at_level(logging.WARNING):
        first = train_call(compiled, batch)
        second = train_call(compiled, inputs(frames=7))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "torch.compile of the A2V-FDM UNet failed" in warnings[0] and says in warnings[0]
    assert "training continues without compile" in warnings[0]
    assert wrapper.failure and wrapper.calls == 0 and second.shape[2] == 7
    torch.testing.assert_close(first, train_call(eager, batch))


@pytest.mark.slow
def test_inductor_without_a_cpp_compiler_falls_back(unets, caplog):
    """The real compiler's failure: inductor pointed at a C++ compiler that does not exist (~30 s of tracing and
    lowering first)."""
    eager, compiled = unets
    wrapper = compile_forward(compiled, "inductor", name="UNet")
    batch = inputs()
    with caplog.at_level(logging.WARNING), torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",)}):
        out = train_call(compiled, batch)
    assert wrapper.failure.startswith("InvalidCxxCompiler") and wrapper.calls == 0
    assert any("InvalidCxxCompiler" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(out, train_call(eager, batch))
