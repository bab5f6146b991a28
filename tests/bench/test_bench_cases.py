"""`dawn-train bench cases`: real runs of cheap demo-size cases in fresh processes (figures and output, never
wall-clock assertions), the usage error, the memory refusal, and the table."""
from __future__ import annotations

import json
import os

import pytest
import torch

from dawn_train.bench.case_run import count_flops, utilisation
from dawn_train.bench.case_table import table_columns, table_rows
from dawn_train.bench.cases import BF16, BF16_COMPILED, COMPILED, add_ratios, child_command
from dawn_train.cli import main

QUICK = ["--repeats", "1", "--warmup", "0", "--threads", "1"]


def test_cases_run_side_by_side_in_fresh_processes(capsys):
    assert main(["bench", "cases", "--cases", "unet_t40,lfg_targets", *QUICK, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["size"] == "demo" and result["implementations"] == ["reference", "fast"]
    # where it ran: figures of two machines are not comparable
    assert result["cpu_name"] and result["cpu_name"] != "unknown CPU" and result["torch_version"] == torch.__version__
    unet, targets = result["cases"]
    assert unet["case"] == "unet_t40" and "T=40, window 80, latent 16" in unet["shapes"]
    assert targets["case"] == "lfg_targets" and "40 frames, 64 px" in targets["shapes"]
    # the UNet takes `implementation`: two runs, each in its own process, of the implementation it names
    assert unet["same_model"] is False
    for impl in ("reference", "fast"):
        run = unet[impl]
        assert run["implementation"] == impl and run["implementation_applied"] is True
        assert run["seconds"] > 0 and run["peak_bytes"] >= 0 and run["estimate_bytes"] > 0
    assert len({unet["reference"]["pid"], unet["fast"]["pid"], os.getpid()}) == 3
    assert unet["speedup"] == pytest.approx(unet["reference"]["seconds"] / unet["fast"]["seconds"], rel=1e-2)
    if unet["fast"]["peak_bytes"] > 0:
        assert unet["memory_ratio"] == pytest.approx(unet["reference"]["peak_bytes"] / unet["fast"]["peak_bytes"],
                                                     rel=1e-2)
    # the LFG takes none: one run, shown in both columns, ratio 1
    assert targets["same_model"] is True and targets["reference"]["implementation_applied"] is False
    assert targets["reference"]["seconds"] > 0 and targets["fast"]["seconds"] == targets["reference"]["seconds"]
    assert targets["speedup"] == 1.0 and targets["fast"]["pid"] == targets["reference"]["pid"]
    # progress: one line per case on stderr
    progress = [line for line in captured.err.splitlines() if line.startswith("bench cases [")]
    assert len(progress) == 2 and "[1/2] unet_t40: reference" in progress[0] and " fast " in progress[0]


def test_bf16_column_times_the_fast_path_under_autocast_in_its_own_process(capsys):
    """`--bf16`: a third run per case, the fast implementation under bf16 autocast (what bf16-mixed runs), beside
    the float32 ones, with its own speed-up against the reference."""
    assert main(["bench", "cases", "--cases", "lfg_step_l1", "--impl", "fast", *QUICK, "--bf16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["implementations"] == ["fast", BF16]
    entry = result["cases"][0]
    assert entry["fast"]["precision"] == "32-true" and entry[BF16]["precision"] == "bf16-mixed"
    assert entry[BF16]["pid"] != entry["fast"]["pid"] and entry[BF16]["seconds"] > 0
    assert entry["speedup_bf16"] is None  # no reference run to compare with
    ratios = add_ratios({"reference": {"seconds": 3.0, "peak_bytes": 300}, BF16: {"seconds": 1.5, "peak_bytes": 100}})
    assert (ratios["speedup_bf16"], ratios["memory_ratio_bf16"]) == (2.0, 3.0)
    assert table_columns(result)[-3:] == ("fast+bf16 s", "bf16 speed-up", "fast+bf16 peak MiB")


def test_attn_backend_reaches_the_a2v_model_of_every_run(capsys):
    """`--attn-backend sdpa`: the UNet built with torch's fused attention (what experiments/a2v/base.yaml trains with),
    recorded in each run; models without the argument are built as before."""
    from dawn_train.bench.case_workloads import SIZES, Setup
    from dawn_train.models.a2v import build_a2v
    from dawn_train.models.pbnet import PBNet

    setup = Setup(attn_backend="sdpa")
    assert setup.build(build_a2v, **SIZES["demo"]["a2v"]).unet.attn_backend == "sdpa"
    assert setup.backend_applied
    other = Setup(attn_backend="sdpa")
    assert isinstance(other.build(PBNet, **SIZES["demo"]["pbnet"]), PBNet)  # takes neither argument
    assert not other.backend_applied and not other.applied  # its runs record attn_backend None
    assert Setup().build(build_a2v, **SIZES["demo"]["a2v"]).unet.attn_backend == "math"
    assert main(["bench", "cases", "--cases", "unet_t40", "--impl", "fast", *QUICK, "--attn-backend", "sdpa",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["attn_backend"] == "sdpa" and result["cases"][0]["fast"]["attn_backend"] == "sdpa"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "cases", "--cases", "unet_t40", "--attn-backend", "flash"])
    assert exit_.value.code == 2
    assert "invalid choice: 'flash'" in capsys.readouterr().err


def test_profile_lists_the_largest_operators_and_writes_the_trace(capsys, tmp_path):
    """`--profile N`: one more call under torch.profiler, its N largest operators by self time (here, on a CPU, the
    UNet's matrix products and convolutions are among them); `--trace-dir`: that call's Chrome trace."""
    import gzip

    traces = tmp_path / "profiles v1.d"
    assert main(["bench", "cases", "--cases", "unet_t40", "--impl", "fast", *QUICK, "--profile", "5", "--trace-dir",
                 str(traces), "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)["cases"][0]["fast"]["profile"]
    ops = profile["operators"]
    assert profile["time"] == "self CPU" and len(ops) == 5 and profile["operator_calls"] > 100
    assert [op["self_ms"] for op in ops] == sorted((op["self_ms"] for op in ops), reverse=True)
    assert all(0 < op["self_ms"] <= op["total_ms"] + 1e-6 and op["calls"] >= 1 for op in ops)
    assert {"aten::mm", "aten::bmm", "aten::addmm"} & {op["operator"] for op in ops}
    assert "kernels" not in profile  # CUDA only
    trace = traces / "unet_t40.fast.json.gz"
    assert profile["trace"] == str(trace)
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    assert any(event.get("name") == ops[0]["operator"] for event in events)
    # the table: one profile block per profiled run
    assert main(["bench", "cases", "--cases", "unet_t40", "--impl", "fast", *QUICK, "--profile", "3"]) == 0
    assert "profile of unet_t40 fast" in capsys.readouterr().out
    assert main(["bench", "cases", "--cases", "unet_t40", "--trace-dir", str(traces)]) == 2
    assert "--trace-dir needs --profile" in capsys.readouterr().err


def test_a_profiler_failure_keeps_the_timed_figures(monkeypatch, capsys):
    import dawn_train.bench.profile as profile_module
    from dawn_train.bench.case_run import run_case
    from dawn_train.bench.case_table import profile_table

    def broken(*args, **kwargs):
        raise AttributeError("'FunctionEvent' object has no attribute 'time_range'")

    monkeypatch.setattr(profile_module, "profile_call", broken)
    result = run_case("unet_t40", "fast", threads=1, repeats=1, warmup=0, profile=5)
    assert result["seconds"] > 0 and result["peak_bytes"] >= 0
    assert result["profile"] == {"error": "AttributeError: 'FunctionEvent' object has no attribute 'time_range'"}
    assert "unet_t40 (fast) not profiled" in capsys.readouterr().err
    assert "not profiled" in profile_table("unet_t40 fast", result["profile"]).title


def test_a_run_past_its_timeout_is_killed_and_the_others_go_on(capsys):
    """`--run-timeout S`: a child still running after S seconds is killed and reported as an error (exit 1); the
    next run is started all the same (here both: 0.5 s is not enough to import torch)."""
    assert main(["bench", "cases", "--cases", "unet_t40,pbnet_step", "--impl", "fast", *QUICK, "--run-timeout", "0.5",
                 "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [entry["fast"] for entry in result["cases"]] == [{"error": "killed after 0.5 s (--run-timeout)"}] * 2
    assert "unet_t40 (fast): killed after 0.5 s" in captured.err and "pbnet_step (fast): killed" in captured.err
    with pytest.raises(SystemExit) as refused:  # argparse: a usage error naming the flag
        main(["bench", "cases", "--cases", "unet_t40", "--run-timeout", "0"])
    assert refused.value.code == 2 and "argument --run-timeout: must be > 0" in capsys.readouterr().err


def test_the_table_title_names_the_cpu_and_torch(capsys):
    from dawn_train.bench.case_run import cpu_name

    assert main(["bench", "cases", "--cases", "pbnet_step", "--impl", "fast", *QUICK]) == 0
    title = " ".join(capsys.readouterr().out.split())  # rich may wrap the title
    assert " ".join(cpu_name().split()) in title and f"torch {torch.__version__}" in title and "1 threads" in title


def test_batch_and_flops_report_samples_per_second_and_utilisation(capsys):
    """`--batch 3 --flops`: the A2V-FDM step takes 3 clips, counts its FLOPs (about 3x those of one clip: the
    same network per clip) and reports TFLOP/s, samples/s and, given a peak, the MFU."""
    runs = {}
    for batch in (1, 3):
        assert main(["bench", "cases", "--cases", "a2v_step_t20", "--impl", "fast", *QUICK, "--batch", str(batch),
                     "--flops", "--peak-tflops", "0.5", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["batch"] == batch and result["flops"] is True
        runs[batch] = result["cases"][0]["fast"]
    one, three = runs[1], runs[3]
    assert "B=3, T=20" in three["shapes"] and three["samples_per_s"] == pytest.approx(3 / three["seconds"])
    assert 2.9 < three["flops"] / one["flops"] < 3.1
    assert three["tflops"] == pytest.approx(three["flops"] / three["seconds"] / 1e12)
    assert three["peak_tflops"] == 0.5 and three["mfu"] == pytest.approx(three["tflops"] / 0.5)
    assert table_columns(result)[-3:] == ("fast TFLOP/s", "fast MFU", "fast samples/s")


def test_flop_count_and_mfu_of_a_known_matmul():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    run = {"seconds": 2.0, "precision": "bf16-mixed", "device_name": "NVIDIA H200"}
    assert utilisation(4e12, run, None) == {"flops": 4e12, "tflops": 2.0, "peak_tflops": 989.4,
                                            "mfu": pytest.approx(2.0 / 989.4)}
    assert utilisation(4e12, {**run, "precision": "32-true"}, None)["mfu"] is None  # no honest float32 peak
    assert utilisation(4e12, {**run, "device_name": "NVIDIA H100 PCIe"}, None)["mfu"] is None  # not the SXM peak
    assert utilisation(4e12, {**run, "device_name": None}, 4.0)["mfu"] == 0.5
    assert utilisation(None, run, None)["tflops"] is None


def test_unknown_case_is_a_one_line_usage_error(capsys):
    assert main(["bench", "cases", "--cases", "unet_t40,unet_t41", *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown case 'unet_t41'" in err[0] and "unet_t600" in err[0]
    assert main(["bench", "cases", "--cases", "unet_t40", "--impl", "quick", *QUICK]) == 2
    assert "unknown implementation 'quick'" in capsys.readouterr().err


def test_unet_t600_is_refused_above_the_memory_budget(capsys):
    assert main(["bench", "cases", "--cases", "unet_t600", "--impl", "fast", "--memory-budget", "0.01", *QUICK,
                 "--json"]) == 0
    captured = capsys.readouterr()
    run = json.loads(captured.out)["cases"][0]["fast"]
    assert run["refused"] is True and "seconds" not in run
    assert run["budget_bytes"] == int(0.01 * 2 ** 30) < run["estimate_bytes"]
    assert "unet_t600 (fast) refused" in run["message"] and "--memory-budget" in run["message"]
    assert "unet_t600 (fast) refused" in captured.err  # said while it runs, not only in the JSON


def test_ratios_and_table_rows():
    entry = add_ratios({"case": "unet_t200", "shapes": "T=200", "same_model": False,
                        "reference": {"seconds": 3.0, "peak_bytes": 400 * 2 ** 20},
                        "fast": {"seconds": 1.5, "peak_bytes": 100 * 2 ** 20},
                        COMPILED: {"seconds": 1.0, "peak_bytes": 90 * 2 ** 20, "compile_fallback": None}})
    assert (entry["speedup"], entry["memory_ratio"], entry["speedup_compile"]) == (2.0, 4.0, 3.0)
    refused = add_ratios({"case": "unet_t600", "fast": {"refused": True, "estimate_bytes": 3 * 2 ** 30}})
    assert refused["speedup"] is None
    result = {"implementations": ["reference", "fast", COMPILED], "cases": [entry, refused]}
    assert table_columns(result)[-1] == "fast+compile s"
    rows = table_rows(result)
    assert rows[0] == ["unet_t200", "T=200", "3.000", "1.500", "2.00", "400", "100", "4.00", "1.000"]
    assert rows[1][2:5] == ["-", "refused (est. 3.0 GiB)", "-"]
    assert "--compile" in child_command("unet_t40", "fast", size="demo", device="cpu", threads=1, repeats=1, warmup=0,
                                        steps=20, compile=True)

    # compiled under bf16 autocast: a column of its own, after the bf16 one
    both = add_ratios({**entry, BF16: {"seconds": 1.2, "peak_bytes": 80 * 2 ** 20},
                       BF16_COMPILED: {"seconds": 0.75, "peak_bytes": 70 * 2 ** 20, "compile_fallback": None}})
    assert both["speedup_bf16_compile"] == 4.0
    result = {"implementations": ["reference", "fast", COMPILED, BF16, BF16_COMPILED], "cases": [both]}
    assert table_columns(result)[-1] == "fast+bf16+compile s" and table_rows(result)[0][-1] == "0.750"


def test_compile_mode_reaches_torch_compile_and_cuda_graph_modes_mark_each_call_a_step(monkeypatch):
    from dawn_train.bench.case_run import compile_workload
    from dawn_train.bench.case_workloads import Workload
    from dawn_train.bench.cases import bench_cases

    args = child_command("sample_t200", "fast", size="demo", device="cuda", threads=1, repeats=1, warmup=0, steps=20,
                         compile=True, compile_mode="reduce-overhead")
    assert args[args.index("--compile-mode") + 1] == "reduce-overhead"
    with pytest.raises(ValueError, match="unknown compile mode 'fastest'"):
        bench_cases("unet_t40", compile=True, compile_mode="fastest")
    with pytest.raises(ValueError, match="--compile-mode reduce-overhead needs --compile"):
        bench_cases("unet_t40", compile_mode="reduce-overhead")

    events = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: events.append(("compile", options)) or fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("step"))
    layer = torch.nn.Linear(2, 2)

    def call():
        events.append("call")
        return layer(torch.ones(1, 2))

    for mode, expected in [("default", {}), ("max-autotune-no-cudagraphs", {"mode": "max-autotune-no-cudagraphs"})]:
        events.clear()
        work = Workload(call, "B=1", 6, [(layer, ("forward",))])
        assert compile_workload(work, "unet_t40", mode=mode) is None
        assert events == [("compile", expected), "call", "call"] and work.fn is call
    events.clear()
    work = Workload(call, "B=1", 6, [(layer, ("forward",))])
    assert compile_workload(work, "unet_t40", mode="reduce-overhead") is None
    work.fn()  # a timed call is a step of the graphs too
    assert events == [("compile", {"mode": "reduce-overhead"})] + ["step", "call"] * 3


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch, capsys):
    import torch

    from dawn_train.bench.case_run import compile_workload
    from dawn_train.bench.case_workloads import Workload

    def broken_compile(fn):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nsecond line")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    layer = torch.nn.Linear(2, 2)
    work = Workload(lambda: layer(torch.ones(1, 2)), "B=1", 6, [(layer, ("forward",))])
    reason = compile_workload(work, "unet_t40")
    assert reason == "RuntimeError: no C++ compiler second line"
    assert "forward" not in vars(layer) and work.fn().shape == (1, 2)  # the eager method is back
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench cases: warning: torch.compile failed for unet_t40")
