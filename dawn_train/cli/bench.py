"""`dawn-train bench loader|prep|attention|sample|generate|step|cases`: throughput, time and peak-memory figures."""
from __future__ import annotations

import argparse
import json

from dawn_train.cli.arguments import non_negative_float, non_negative_int, positive_float, positive_int
from dawn_train.cli.output import print_json_or_table


def cmd_bench_loader(args) -> int:
    from dawn_train.bench.loader import bench_loader

    result = bench_loader(args.shards, stage=args.stage, clip_len=args.clip_len, workers=args.workers,
                          batch_size=args.batch_size, batches=args.batches, max_skip_fraction=args.max_skip_fraction)
    print_json_or_table(result, args.json, f"loader throughput ({args.stage})")
    return 0


def cmd_bench_prep(args) -> int:
    from dawn_train.bench.prep import bench_prep

    print_json_or_table(bench_prep(args.seconds, args.videos, args.size), args.json, "data prep on 720p input")
    return 0


def cmd_bench_attention(args) -> int:
    from dawn_train.bench.attention import bench_attention

    result = bench_attention(args.frames, args.window, positions=args.positions, heads=args.heads,
                             dim_head=args.dim_head, backend=args.backend, dtype=args.dtype, device=args.device,
                             repeats=args.repeats)
    print_json_or_table(result, args.json, "temporal attention: banded (ours) vs masked full (official)")
    return 0


def cmd_bench_sample(args) -> int:
    from dawn_train.bench.sample import bench_sample

    result = bench_sample(args.frames, args.window, preset=args.preset, latent=args.latent, steps=args.steps,
                          device=args.device, dtype=args.dtype, attn_backend=args.backend, repeats=args.repeats,
                          warmup=args.warmup, progress=not args.quiet)
    print_json_or_table(result, args.json, "A2V-FDM DDIM sampling: banded (ours) vs full temporal attention")
    return 0


def cmd_bench_generate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from dawn_train.bench.generate import TABLE_COLUMNS, Models, bench_generate, table_rows

    if bool(args.lfg) != bool(args.a2v) or bool(args.pbnet_pose) != bool(args.pbnet_blink):
        raise ValueError("give --lfg and --a2v together (and --pbnet-pose with --pbnet-blink), or none for tiny "
                         "random demo-architecture models")
    models = Models(args.lfg, args.a2v, args.pbnet_pose, args.pbnet_blink) if args.lfg else None
    seconds = [float(s) for s in args.seconds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    result = bench_generate(seconds, modes, models=models, chunk_seconds=args.chunk_seconds,
                            chunk_overlap=args.chunk_overlap, steps=args.steps, budget_gib=args.memory_budget,
                            device=args.device, decode_chunk=args.decode_chunk, progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    steps = f"DDIM steps: {args.steps}" if args.steps else "the checkpoint's DDIM steps"
    table = Table(title=f"generate on long audio ({result['models']}, {steps}, windows of {args.chunk_seconds:g} s "
                        f"+ {args.chunk_overlap:g} s overlap; memory above the RSS with models and inputs loaded)")
    for column in TABLE_COLUMNS:
        table.add_column(column)
    for row in table_rows(result):
        table.add_row(*row)
    Console(width=max(Console().width, 140)).print(table)
    return 0


def cmd_bench_step(args) -> int:
    from dawn_train.bench.step import bench_step

    result = bench_step(args.config, steps=args.steps, warmup=args.warmup, overrides=args.override)
    print_json_or_table(result, args.json, f"training step ({result['stage']})")
    return 0


def cmd_bench_cases(args) -> int:
    import sys

    from rich.console import Console
    from rich.table import Table

    from dawn_train.bench.case_table import errors, profile_table, table_columns, table_rows
    from dawn_train.bench.cases import DEFAULT_CASES, bench_cases

    result = bench_cases(args.cases or DEFAULT_CASES, args.impl, release_size=args.release_size, threads=args.threads,
                         repeats=args.repeats, warmup=args.warmup, steps=args.steps, compile=args.compile,
                         bf16=args.bf16, budget_gib=args.memory_budget, device=args.device, batch=args.batch,
                         flops=args.flops, peak_tflops=args.peak_tflops, compile_mode=args.compile_mode,
                         attn_backend=args.attn_backend, profile=args.profile, trace_dir=args.trace_dir,
                         run_timeout=args.run_timeout, progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        where = ", ".join(part for part in (result["device_name"] or result["cpu_name"], f"{result['threads']} threads",
                                            result["torch_version"] and f"torch {result['torch_version']}",
                                            result.get("allocator")) if part)
        mode = f", torch.compile mode {result['compile_mode']}" if result.get("compile_mode") else ""
        mode += f", {result['attn_backend']} attention" if result.get("attn_backend", "math") != "math" else ""
        table = Table(title=f"bench cases ({result['size']} sizes, {where}{mode}, median of "
                            f"{result['repeats']}; speed-up and memory ratio = reference / fast; peak = above loaded)")
        for column in table_columns(result):
            table.add_column(column)
        for row in table_rows(result):
            table.add_row(*row)
        console = Console(width=max(Console().width, 160))
        console.print(table)
        for entry in result["cases"]:
            for label in result["implementations"]:
                if entry.get(label, {}).get("profile"):
                    console.print(profile_table(f"{entry['case']} {label}", entry[label]["profile"]))
    for line in errors(result):
        print(f"dawn-train: error: {line}", file=sys.stderr)
    return 1 if errors(result) else 0


def cmd_bench_roofline(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from dawn_train.bench.roofline import roofline

    result = roofline(args.case, size="release" if args.release_size else "demo", batch=args.batch,
                      frames=args.frames, dtype=args.dtype, implementation=args.impl, attn_backend=args.attn_backend,
                      device=args.device, peak_tflops=args.peak_tflops, bandwidth_tbs=args.bandwidth_tbs, top=args.top)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    gib = 2 ** 30
    where = f"{result['device']}: {result['peak_tflops']:g} TFLOP/s, {result['bandwidth_tbs']:g} TB/s"
    summary = Table(title=f"roofline of {result['case']} ({result['size']} sizes, {result['shapes']}, {result['dtype']}, "
                          f"{result['implementation']}, {result['attn_backend']} attention; {where}; a bound from the operators, not a measurement)")
    summary.add_column("")
    summary.add_column("value")
    for label, value in [
            ("kernels (operators that move data)", f"{result['kernels']:,}"),
            ("FLOPs", f"{result['flops'] / 1e12:.3f} T"),
            ("bytes read + written, op by op", f"{result['bytes'] / gib:.1f} GiB"),
            ("arithmetic intensity", f"{result['intensity']:.1f} FLOP/byte" if result["intensity"] else "-"),
            ("compute time at peak", f"{result['compute_ms']:.2f} ms"),
            ("op-by-op roofline (one kernel per operator)", f"{result['roofline_ms']:.2f} ms"),
            ("  MFU bound", f"{100 * result['mfu_bound']:.1f} %" if result["mfu_bound"] else "-"),
            ("fused floor (weights, saved activations)", f"{result['fused_roofline_ms']:.2f} ms"),
            ("  MFU bound", f"{100 * result['fused_mfu_bound']:.1f} %" if result["fused_mfu_bound"] else "-")]:
        summary.add_row(label, value)
    operators = Table(title="the operators with the largest bound")
    for column in ("operator", "calls", "TFLOP", "GiB", "ms"):
        operators.add_column(column)
    for op in result["operators"]:
        operators.add_row(op["operator"], str(op["calls"]), f"{op['flops'] / 1e12:.3f}", f"{op['bytes'] / gib:.2f}",
                          f"{op['ms']:.2f}")
    console = Console(width=max(Console().width, 120))
    console.print(summary)
    console.print(operators)
    return 0


def add_bench_commands(commands: argparse._SubParsersAction) -> None:
    """`bench` and its subcommands, added to the top-level `commands`."""
    from dawn_train.bench.cases import ATTN_BACKENDS  # standard library only: the CLI starts as fast

    bench = commands.add_parser("bench", help="benchmarks (loader, ...)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")
    loader = bench_commands.add_parser("loader", help="training-stream throughput: clips/s, frames/s, MB/s")
    loader.add_argument("--shards", required=True)
    loader.add_argument("--stage", default="a2v", choices=("lfg", "pbnet", "a2v"))
    loader.add_argument("--clip-len", type=positive_int, default=40, help="A2V clip length / PBNet window")
    loader.add_argument("--workers", type=non_negative_int, default=1, help="dataloader worker processes")
    loader.add_argument("--batch-size", type=positive_int, default=4)
    loader.add_argument("--batches", type=positive_int, default=50, help="timed batches (after 2 warm-up batches)")
    loader.add_argument("--max-skip-fraction", type=non_negative_float, default=0.1,
                        help="bad samples are skipped and counted (as in training) up to this fraction")
    loader.add_argument("--json", action="store_true")
    loader.set_defaults(func=cmd_bench_loader)
    bprep = bench_commands.add_parser("prep", help="data prep throughput on 720p input: videos/s and frames/s per core")
    bprep.add_argument("--seconds", type=positive_float, default=10.0, help="length of each test video")
    bprep.add_argument("--videos", type=positive_int, default=2, help="videos prepared one after the other")
    bprep.add_argument("--size", type=positive_int, default=256, help="crop side")
    bprep.add_argument("--json", action="store_true")
    bprep.set_defaults(func=cmd_bench_prep)
    attention = bench_commands.add_parser("attention", help="banded vs full temporal attention: time and peak memory")
    attention.add_argument("--frames", type=positive_int, default=200)
    attention.add_argument("--window", type=non_negative_int, default=80, help="whole window in frames (paper count; 80 = +-40)")
    attention.add_argument("--positions", type=positive_int, default=None,
                           help="sequences (batch x h x w); default 1024 on CUDA, 64 on CPU")
    attention.add_argument("--heads", type=positive_int, default=8)
    attention.add_argument("--dim-head", type=positive_int, default=32)
    sample = bench_commands.add_parser("sample", help="A2V-FDM DDIM generation of T frames, banded vs full attention")
    sample.add_argument("--frames", type=positive_int, default=200)
    sample.add_argument("--window", type=non_negative_int, default=80, help="whole window in frames (paper count; 80 = +-40)")
    sample.add_argument("--preset", default="demo", choices=("demo", "release"),
                        help="UNet size (release = 49.9 M params)")
    sample.add_argument("--latent", type=positive_int, default=None, help="latent size h = R / 4 (default: preset's)")
    sample.add_argument("--steps", type=positive_int, default=20, help="DDIM steps")
    sample.add_argument("--warmup", type=non_negative_int, default=None,
                        help="untimed generations first (default: 1 on CUDA, 0 on CPU)")
    sample.add_argument("--quiet", action="store_true", help="no progress bars")
    for sub in (attention, sample):
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        sub.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
        sub.add_argument("--backend", default="math", choices=("math", "sdpa"), help="attention kernel")
        sub.add_argument("--repeats", type=positive_int, default=None)
        sub.add_argument("--json", action="store_true")
    attention.set_defaults(func=cmd_bench_attention, repeats=3)
    sample.set_defaults(func=cmd_bench_sample, repeats=1)
    bgen = bench_commands.add_parser("generate", help="generate on long audio: peak memory and s per generated s, "
                                     "windows vs one pass (fresh process per case)")
    bgen.add_argument("--seconds", default="10,60,600", help="audio lengths, comma-separated")
    bgen.add_argument("--modes", default="windows,whole,dense",
                      help="windows (--chunk-seconds), whole (one pass), dense (one pass, official dense PBNet)")
    bgen.add_argument("--chunk-seconds", type=positive_float, default=10.0, help="window length of the windows mode")
    bgen.add_argument("--chunk-overlap", type=non_negative_float, default=2.0, help="cross-faded overlap of windows (seconds)")
    bgen.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default: the checkpoint's)")
    bgen.add_argument("--memory-budget", type=positive_float, default=None,
                      help="GiB a case may use (default: available memory); cases estimated above are refused")
    bgen.add_argument("--decode-chunk", type=positive_int, default=32, help="frames per LFG decode call")
    for name in ("lfg", "a2v", "pbnet-pose", "pbnet-blink"):
        bgen.add_argument(f"--{name}", default=None, help="checkpoint (default: tiny random demo-architecture models)")
    bgen.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    bgen.add_argument("--quiet", action="store_true", help="no progress bars")
    bgen.add_argument("--json", action="store_true")
    bgen.set_defaults(func=cmd_bench_generate)
    step = bench_commands.add_parser("step", help="training steps/s, samples/s and peak memory of a config")
    step.add_argument("-c", "--config", required=True, action="append",
                      help="config files in order, as for fit (repeat -c): e.g. -c experiments/base.yaml "
                           "-c experiments/demo/base.yaml -c experiments/demo/lfg.yaml")
    step.add_argument("--steps", type=positive_int, default=10, help="timed optimizer steps (after warm-up)")
    step.add_argument("--warmup", type=non_negative_int, default=2)
    step.add_argument("--override", action="append", default=[], help="extra CLI override, e.g. --override=--data.init_args.batch_size=2")
    step.add_argument("--json", action="store_true")
    step.set_defaults(func=cmd_bench_step)
    add_cases_command(bench_commands)
    roof = bench_commands.add_parser("roofline", help="the fastest the A2V-FDM UNet could run on a GPU, from its "
                                     "operators traced on the meta device: time and MFU bounds (no GPU needed)")
    roof.add_argument("--case", default="a2v_step", choices=("a2v_step", "unet_call"),
                      help="a train step's forward + backward, or one denoise call without gradients")
    roof.add_argument("--release-size", action="store_true", help="the released A2V-FDM (128 px) instead of the demo's")
    roof.add_argument("--batch", type=positive_int, default=16, help="clips per step (a2v_step)")
    roof.add_argument("--frames", type=positive_int, default=20, help="frames per clip or call")
    roof.add_argument("--dtype", default="bf16", choices=("bf16", "float32"))
    roof.add_argument("--impl", default="fast", choices=("reference", "fast"))
    roof.add_argument("--attn-backend", default="math", choices=ATTN_BACKENDS,
                      help="the UNet's attention backend; sdpa is traced with the fused kernels CUDA runs for it")
    roof.add_argument("--device", default="H200", help="H200, H100 or A100 (their dense bf16 peak and bandwidth)")
    roof.add_argument("--peak-tflops", type=positive_float, default=None, help="the device's peak for --dtype instead")
    roof.add_argument("--bandwidth-tbs", type=positive_float, default=None, help="its memory bandwidth (TB/s) instead")
    roof.add_argument("--top", type=positive_int, default=8, help="operators listed")
    roof.add_argument("--json", action="store_true")
    roof.set_defaults(func=cmd_bench_roofline)


def add_cases_command(bench_commands: argparse._SubParsersAction) -> None:
    from dawn_train.bench.cases import ATTN_BACKENDS, COMPILE_MODES  # standard library only: the CLI starts as fast

    cases = bench_commands.add_parser("cases", help="the performance issue's cases (LFG, A2V-FDM, UNet, sampling, PBNet): "
                                      "reference vs fast implementation, time and peak memory, a fresh process each")
    cases.add_argument("--cases", default=None, help="comma-separated, of lfg_step_full, lfg_step_l1, lfg_targets, "
                       "a2v_step_t20, unet_t40, unet_t200, unet_t600, sample_t200, pbnet_step (default: all but the long "
                       "unet_t600 and sample_t200)")
    cases.add_argument("--impl", default="reference,fast", help="implementations, comma-separated: reference, fast")
    cases.add_argument("--release-size", action="store_true", help="the official released model sizes (128 px) "
                       "instead of the demo sizes (64 px)")
    cases.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads in each case's process")
    cases.add_argument("--repeats", type=positive_int, default=3, help="timed calls (median)")
    cases.add_argument("--warmup", type=non_negative_int, default=1, help="untimed calls first")
    cases.add_argument("--steps", type=positive_int, default=20, help="DDIM steps of sample_t200")
    cases.add_argument("--compile", action="store_true", help="also time the fast implementation with the UNet and "
                       "the LFG generator under torch.compile (column fast+compile; with --bf16 also "
                       "fast+bf16+compile)")
    cases.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                       help="torch.compile's mode for --compile: reduce-overhead and max-autotune replay CUDA graphs "
                       "on a GPU (each timed call is one step of them)")
    cases.add_argument("--profile", type=non_negative_int, default=0, metavar="N",
                       help="one more call of each run under torch.profiler: its N largest operators by self time "
                       "(on CUDA also the kernels launched and the device's busy time)")
    cases.add_argument("--run-timeout", type=positive_float, default=None, metavar="S",
                       help="kill a run (one case, one column) still going after S seconds and report it as an error; "
                       "the other runs go on (default: no limit)")
    cases.add_argument("--trace-dir", default=None,
                       help="with --profile: write each profiled call's Chrome trace there (<case>.<run>.json.gz; open "
                       "in ui.perfetto.dev)")
    cases.add_argument("--attn-backend", default="math", choices=ATTN_BACKENDS,
                       help="the A2V-FDM's attention kernels: math, or sdpa (torch's fused kernels on a GPU, what "
                       "experiments/a2v/base.yaml trains with)")
    cases.add_argument("--bf16", action="store_true", help="also time the fast implementation under bf16 autocast, "
                       "what trainer.precision: bf16-mixed runs (column fast+bf16: lower precision, not the same "
                       "numbers)")
    cases.add_argument("--memory-budget", type=positive_float, default=None,
                       help="GiB a UNet case may use (default: available memory); cases estimated above are refused")
    cases.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    cases.add_argument("--batch", type=positive_int, default=None, help="batch of the train-step cases (default: each case's "
                       "own, as in the performance issue: LFG 2, A2V-FDM 1, PBNet 4)")
    cases.add_argument("--flops", action="store_true", help="count each run's FLOPs (one more call) and report "
                       "TFLOP/s, samples/s and MFU (bf16 on H100/H200/A100, or any run with --peak-tflops)")
    cases.add_argument("--peak-tflops", type=positive_float, default=None, help="a dense peak TFLOP/s used for every run's "
                       "MFU (achieved / this), float32 and bf16 alike: give the peak of the precision you compare")
    cases.add_argument("--quiet", action="store_true", help="no progress lines")
    cases.add_argument("--json", action="store_true")
    cases.set_defaults(func=cmd_bench_cases)
