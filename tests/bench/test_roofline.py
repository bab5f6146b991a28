"""`dawn-train bench roofline`: operator FLOPs and bytes traced on the meta device, and the bounds built from them
(properties and exact counts of small cases; the release figures are in docs/performance.md)."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dawn_train.bench.roofline import OperatorTraffic, RooflineError, bound, roofline, trace
from dawn_train.cli import main


def test_a_matmul_costs_its_flops_and_its_operands_and_a_view_costs_nothing():
    a, b = torch.empty(64, 128, device="meta"), torch.empty(128, 32, device="meta")
    with OperatorTraffic() as traffic:
        out = a @ b
        out.t(), out.view(-1)[:10], out.reshape(32, 64)  # views of a contiguous result: no kernel
        torch.empty(1024, 1024, device="meta"), torch.empty_like(out)  # allocations: nothing read or written
    [(name, flops, moved)] = traffic.ops
    assert name == "aten.mm" and flops == 2 * 64 * 128 * 32
    assert moved == 4 * (64 * 128 + 128 * 32 + 64 * 32)
    result = bound(traffic, peak_flops=1e12, bandwidth=1e9, floor_bytes=moved)
    assert result["roofline_ms"] == pytest.approx(1e3 * moved / 1e9)  # memory-bound on this device
    assert result["mfu_bound"] == pytest.approx(flops / 1e12 / (moved / 1e9))
    result = bound(traffic, peak_flops=1e6, bandwidth=1e12, floor_bytes=moved)
    assert result["roofline_ms"] == pytest.approx(1e3 * flops / 1e6) and result["mfu_bound"] == pytest.approx(1.0)


def test_saved_activations_are_counted_once():
    w = torch.empty(256, 256, device="meta", requires_grad=True)
    x = torch.empty(8, 256, device="meta", requires_grad=True)

    def call():
        (x @ w).relu().sum().backward()

    traffic, saved = trace(call, (w,))
    # the product saves x (for w's gradient) and w (for x's: a weight, not an activation); relu saves its output
    # (8 x 256): 2 x 8 KiB of activations
    assert saved == 2 * 8 * 256 * 4
    assert trace(call)[1] == saved + 256 * 256 * 4  # w counted when not named a weight
    assert any(name == "aten.mm" for name, _, _ in traffic.ops)


@pytest.mark.parametrize("case", ["a2v_step", "unet_call"])
def test_the_unet_roofline_counts_what_the_flop_counter_counts_and_bounds_hold(case):
    result = roofline(case, size="demo", batch=2, frames=8, dtype="bf16")
    assert result["kernels"] > 100 and result["bytes"] > 0
    # the same FLOPs as torch's counter over the same call
    from dawn_train.bench.case_workloads import SIZES
    from dawn_train.models.a2v import build_a2v

    with torch.device("meta"):
        unet = build_a2v(**SIZES["demo"]["a2v"], **({} if case == "a2v_step" else {"window_size": 80})).unet
    unet = unet.to(torch.bfloat16).train(case == "a2v_step")
    batch = 2 if case == "a2v_step" else 1
    x = torch.empty(batch, 3 if case == "a2v_step" else unet.channels, 8, 16, 16, device="meta", dtype=torch.bfloat16)
    cond = torch.empty(batch, 8, unet.cond_dim, device="meta", dtype=torch.bfloat16)
    time = torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        if case == "a2v_step":
            context = torch.empty(batch, unet.channels - 3, 16, 16, device="meta", dtype=torch.bfloat16)
            out = unet(x, time, cond, null_cond_prob=0.1, context=context)
            (out.float() - x.float()).square().mean().backward()
        else:
            with torch.no_grad(), unet.chunks_sized_for("cuda"):
                unet(x, time, cond)
    assert result["flops"] == counter.get_total_flops() > 0
    # per-op maxima: at least the compute or the memory time alone, at most both
    assert max(result["compute_ms"], result["memory_ms"]) <= result["roofline_ms"] + 1e-9
    assert result["roofline_ms"] <= result["compute_ms"] + result["memory_ms"] + 1e-9
    assert 0 < result["mfu_bound"] <= result["fused_mfu_bound"] <= 1
    assert result["fused_roofline_ms"] <= result["roofline_ms"]
    assert sum(op["ms"] for op in result["operators"]) <= result["roofline_ms"] + 1e-9


def test_bf16_moves_fewer_bytes_for_the_same_flops_and_bandwidth_scales_the_bound():
    bf16 = roofline("a2v_step", size="demo", batch=2, frames=8, dtype="bf16")
    fp32 = roofline("a2v_step", size="demo", batch=2, frames=8, dtype="float32", peak_tflops=989.4)
    assert fp32["flops"] == bf16["flops"] and bf16["bytes"] < 0.7 * fp32["bytes"]
    assert bf16["saved_bytes"] < fp32["saved_bytes"]
    slow = roofline("a2v_step", size="demo", batch=2, frames=8, dtype="bf16", bandwidth_tbs=2.4)
    assert slow["memory_ms"] == pytest.approx(2 * bf16["memory_ms"])
    twice = roofline("a2v_step", size="demo", batch=4, frames=8, dtype="bf16")
    assert twice["flops"] == pytest.approx(2 * bf16["flops"], rel=0.01)


def test_cli_prints_json_and_refuses_what_it_cannot_bound(capsys):
    assert main(["bench", "roofline", "--case", "unet_call", "--frames", "8", "--device", "A100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["case"] == "unet_call" and result["peak_tflops"] == 312.0 and result["shapes"].startswith("B=1, T=8")
    assert main(["bench", "roofline", "--frames", "4", "--batch", "1"]) == 0
    assert "MFU bound" in capsys.readouterr().out
    assert main(["bench", "roofline", "--dtype", "float32"]) == 2
    assert "give --peak-tflops" in capsys.readouterr().err
    assert main(["bench", "roofline", "--device", "TPU"]) == 2
    assert "unknown device 'TPU'" in capsys.readouterr().err
    for bad in (["--peak-tflops", "0"], ["--bandwidth-tbs", "-1"]):
        with pytest.raises(SystemExit) as refused:  # argparse: a usage error naming the flag
            main(["bench", "roofline", "--device", "TPU", "--peak-tflops", "100", "--bandwidth-tbs", "1", *bad])
        assert refused.value.code == 2 and f"argument {bad[0]}: must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["bench", "roofline", "--top", "-3"])
    assert refused.value.code == 2 and "argument --top: must be >= 1" in capsys.readouterr().err
    with pytest.raises(RooflineError, match="batch >= 1"):
        roofline("a2v_step", batch=0)


@pytest.mark.parametrize("case", ["a2v_step", "unet_call"])
def test_the_sdpa_backend_is_traced_with_the_fused_kernels_a_gpu_runs(case):
    from dawn_train.bench.case_workloads import SIZES
    from dawn_train.models.a2v import build_a2v
    from dawn_train.models.a2v.attention import TemporalAttention

    math = roofline(case, size="demo", batch=2, frames=8, dtype="bf16", top=100)
    sdpa = roofline(case, size="demo", batch=2, frames=8, dtype="bf16", attn_backend="sdpa", top=100)
    calls = {op["operator"]: op["calls"] for op in sdpa["operators"]}
    temporal = sum(isinstance(m, TemporalAttention) for m in build_a2v(**SIZES["demo"]["a2v"]).unet.modules())
    # every temporal attention (an additive bias: the memory-efficient kernel, its backward in training) and the
    # middle spatial attention (no bias, bf16: flash attention); the math trace has none of them
    assert calls["aten._scaled_dot_product_efficient_attention"] == temporal
    assert calls["aten._scaled_dot_product_flash_attention"] == 1
    if case == "a2v_step":
        assert calls["aten._scaled_dot_product_efficient_attention_backward"] == temporal
        assert calls["aten._scaled_dot_product_flash_attention_backward"] == 1
    assert not any("scaled_dot_product" in op["operator"] for op in math["operators"])
    # the same arithmetic, with the scores kept on chip: fewer bytes and kernels, a higher bound
    assert sdpa["flops"] == pytest.approx(math["flops"], rel=0.02)
    assert sdpa["bytes"] < math["bytes"] and sdpa["kernels"] < math["kernels"]
    assert sdpa["mfu_bound"] > math["mfu_bound"] and sdpa["attn_backend"] == "sdpa"
    import torch.nn.functional as F

    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention  # restored after the trace
    with pytest.raises(RooflineError, match="unknown attention backend"):
        roofline(case, attn_backend="flash")
