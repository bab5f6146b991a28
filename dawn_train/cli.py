"""`dawn-train`: the one command line of dawn_train.

    dawn-train data synth|prep|shards|inspect ...   build and check datasets
    dawn-train bench loader ...                throughput figures
    dawn-train bench attention|sample ...      banded vs full temporal attention (time, peak memory)
    dawn-train bench generate --seconds 10,60,600   long audio: peak memory, s per generated s (windows vs one pass)
    dawn-train generate --image --audio --out  portrait + speech -> talking-head mp4
    dawn-train fit|validate|test -c CONFIG     training (LightningCLI, once a stage is configured)
    dawn-train sweep FILE [--submit]           a grid of runs as a SLURM job array
    dawn-train export CKPT --kind K --out F    DeepSpeed/Lightning checkpoint -> plain weights file

Each subcommand parses its arguments and calls one function of the package."""
from __future__ import annotations

import argparse
import json
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _print_json_or_table(result: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(result, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(str(key), json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    Console().print(table)


def cmd_data_synth(args) -> int:
    from dawn_train.data.synth import synth_dataset
    from dawn_train.data.video import Encoding

    ids = synth_dataset(args.out, args.videos, args.seconds, args.size, seed=args.seed, workers=args.workers,
                        encoding=Encoding(gop=args.gop, crf=args.crf))
    print(f"wrote {len(ids)} synthetic videos ({args.seconds} s, {args.size} px) to {args.out}")
    return 0


def cmd_data_shards(args) -> int:
    from dawn_train.data.audio import audio_feature
    from dawn_train.data.shards import FAILURES, write_shards
    from dawn_train.data.video import Encoding

    manifest = write_shards(args.src, args.out, val_fraction=args.val_fraction,
                            samples_per_shard=args.samples_per_shard, chunk_frames=args.chunk_frames,
                            dataset=args.dataset, seed=args.seed, split_files=args.split_file or (),
                            feature=audio_feature(args.features, args.hubert_dir),
                            encoding=Encoding(gop=args.gop, crf=args.crf))
    for split, info in manifest["splits"].items():
        print(f"{split}: {len(info['shards'])} shards, {info['videos']} videos, {info['samples']} samples, "
              f"{info['frames']} frames")
    if manifest["failed_videos"]:
        print(f"{manifest['failed_videos']} videos failed and were skipped (reasons in {args.out}/{FAILURES})")
    print(f"manifest: {args.out}/manifest.json")
    return 0


def cmd_data_prep(args) -> int:
    from dawn_train.data.prep.failures import FAILURES
    from dawn_train.data.prep.run import list_inputs, parse_slice, prep_videos
    from dawn_train.data.prep.video import PrepOptions
    from dawn_train.data.video import Encoding

    index, count = parse_slice(args.slice)
    options = PrepOptions(size=args.size, crop_scale=args.crop_scale, max_gap=args.max_gap,
                          min_seconds=args.min_seconds, encoding=Encoding(gop=args.gop, crf=args.crf))
    summary = prep_videos(list_inputs(args.src, args.list), args.out, options, index, count, workers=args.workers,
                          progress=not args.quiet)
    print(f"prep slice {summary['slice']}: {summary['done']} done, {summary['skipped']} skipped (finished or failed "
          f"before), {summary['failed']} failed of {summary['total']} videos -> {args.out}")
    if summary["failed"]:
        print(f"reasons in {args.out}/{FAILURES}")
    return 0


def cmd_data_inspect(args) -> int:
    from dawn_train.data.shards import FAILURES, inspect_shards

    report = inspect_shards(args.shards)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"feature: {report['feature']}")
        for split, counts in report["splits"].items():
            print(f"{split}: {counts.get('samples', 0)} samples, {counts.get('frames', 0)} frames, "
                  f"{counts.get('seconds', 0) / 60:.2f} min (manifest: {counts['manifest_samples']} samples, "
                  f"{counts['manifest_frames']} frames)")
        for problem in report["bad"]:
            print(f"BAD {problem}")
        if report["failed_videos"]:
            print(f"{report['failed_videos']} input videos could not be read when sharding "
                  f"(see {args.shards}/{FAILURES})")
        print(f"{len(report['bad'])} bad samples" if report["bad"] else "all samples valid")
    mismatch = any(c.get("samples", 0) != c["manifest_samples"] for c in report["splits"].values())
    return 1 if report["bad"] or mismatch else 0


def cmd_bench_loader(args) -> int:
    from dawn_train.bench.loader import bench_loader

    result = bench_loader(args.shards, stage=args.stage, clip_len=args.clip_len, workers=args.workers,
                          batch_size=args.batch_size, batches=args.batches, max_skip_fraction=args.max_skip_fraction)
    _print_json_or_table(result, args.json, f"loader throughput ({args.stage})")
    return 0


def cmd_bench_prep(args) -> int:
    from dawn_train.bench.prep import bench_prep

    _print_json_or_table(bench_prep(args.seconds, args.videos, args.size), args.json, "data prep on 720p input")
    return 0


def cmd_bench_attention(args) -> int:
    from dawn_train.bench.attention import bench_attention

    result = bench_attention(args.frames, args.window, positions=args.positions, heads=args.heads,
                             dim_head=args.dim_head, backend=args.backend, dtype=args.dtype, device=args.device,
                             repeats=args.repeats)
    _print_json_or_table(result, args.json, "temporal attention: banded (ours) vs masked full (official)")
    return 0


def cmd_bench_sample(args) -> int:
    from dawn_train.bench.sample import bench_sample

    result = bench_sample(args.frames, args.window, preset=args.preset, latent=args.latent, steps=args.steps,
                          device=args.device, dtype=args.dtype, attn_backend=args.backend, repeats=args.repeats,
                          warmup=args.warmup, progress=not args.quiet)
    _print_json_or_table(result, args.json, "A2V-FDM DDIM sampling: banded (ours) vs full temporal attention")
    return 0


def cmd_generate(args) -> int:
    from dawn_train.inference.generate import GenerateOptions, generate
    from dawn_train.inference.memory import InsufficientMemory

    try:
        summary = generate(args.image, args.audio, args.out, GenerateOptions.from_namespace(args, args.config),
                           progress=not args.quiet)
    except InsufficientMemory as exc:  # refused before any work: the estimate and what would fit (main says why)
        if args.json:
            print(json.dumps({"refused": str(exc), "frames": exc.estimate.frames, "estimate_bytes": exc.estimate.peak,
                              "budget_bytes": exc.budget}))
        raise
    if args.json:
        print(json.dumps(summary))
        return 0
    how = f"{summary['windows']} windows of {summary['chunk_frames']} frames" if summary["chunk_frames"] else "one pass"
    print(f"wrote {summary['out']}: {summary['frames']} frames ({summary['seconds']:.2f} s) at {summary['size']} px, "
          f"seed {summary['seed']}, DDIM {summary['steps']} steps ({how}), window {summary['window_size'] or 'full'}")
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


def cmd_eval(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from dawn_train.inference.evaluate import TABLE, evaluate, format_synthetic_table, format_table
    from dawn_train.metrics.synthetic import TABLE as SYNTHETIC_TABLE

    weights = {"fid": args.fid_weights, "i3d": args.i3d_weights, "syncnet": args.syncnet_weights,
               "arcface": args.arcface_weights}
    result = evaluate(args.ckpt, args.lfg, args.shards, split=args.split, weights=weights, max_videos=args.max_videos,
                      max_frames=args.max_frames, steps=args.steps, window_size=args.window_size, seed=args.seed,
                      pbnet_pose=args.pbnet_pose, pbnet_blink=args.pbnet_blink, device=args.device, out=args.out,
                      log_wandb=not args.no_wandb, progress=not args.quiet, probe=args.probe,
                      log_videos=args.log_videos, goals=args.goals)
    table = Table(title=f"{result['settings']['videos']} {args.split} videos, {result['settings']['max_frames']} frames "
                        f"max, pose/blink from {result['settings']['pose_blink']}")
    for column in ("", *TABLE):
        table.add_column(column)
    for row in format_table(result):
        table.add_row(*row)
    console = Console(width=max(Console().width, 140))
    console.print(table)
    for name, reason in result["unavailable"].items():
        print(f"n/a {name}: {reason}")
    synthetic = format_synthetic_table(result)
    if synthetic:
        table = Table(title="synthetic ground truth: generated frames vs the real ones (probe), beside the still frame")
        for column in ("", *SYNTHETIC_TABLE):
            table.add_column(column)
        for row in synthetic:
            table.add_row(*row)
        console.print(table)
    if result.get("goals"):
        from dawn_train.metrics.synthetic.goals import GoalCheck, format_goals

        print(f"goals ({args.goals}):")
        for line in format_goals([GoalCheck(**check) for check in result["goals"]]):
            print(f"  {line}")
    print(f"results: {result['out']}")
    return 0


def cmd_data_probe(args) -> int:
    from dawn_train.metrics.synthetic import train_probe

    report = train_probe(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                         eval_videos=args.eval_videos)
    _print_json_or_table({k: v for k, v in report.items() if not isinstance(v, (dict, list))}, args.json,
                         f"synthetic probe -> {args.out}")
    for size, accuracy in (report.get("eval") or {}).items():
        print(f"held-out accuracy at {size}: {json.dumps(accuracy)}")
    return 0


def cmd_convert_official(args) -> int:
    from dawn_train.checkpoints import convert_official

    summary = convert_official(args.kind, args.file, args.out)
    print(f"converted official {summary['kind']} checkpoint {summary['source']} -> {summary['out']}: "
          f"{summary['tensors']} tensors, {summary['parameters']:,} parameters")
    return 0


def cmd_sweep(args) -> int:
    from dawn_train.launch.sweep import run_sweep

    if args.submit and args.dry_run:
        raise ValueError("--submit and --dry-run exclude each other")
    summary = run_sweep(args.file, submit=args.submit, only_failed=args.only_failed, parser=build_parser(),
                        local=args.local)
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"sweep {summary['sweep']}: {summary['points']} points ({summary['trainings']} trainings, "
          f"{summary['evals']} evals), W&B group {summary['group']}, out {summary['out_dir']}; "
          f"to run: {summary['to_run'] or 'nothing'}")
    if summary["local"] is not None:
        for name, state in summary["local"].items():
            print(f"{state}: {name}")
        return 0 if all(state == "done" for state in summary["local"].values()) else 1
    if summary["job"]:
        print(f"submitted job array {summary['job']}"
              + (f", evals as array {summary['eval_job']} after it" if summary["eval_job"] else ""))
    elif summary["script"]:
        print(f"rendered {summary['script']} (not submitted; add --submit, or run: {summary['sbatch']})")
    return 0


def cmd_export(args) -> int:
    from dawn_train.checkpoints import export

    summary = export(args.ckpt, args.kind, args.out, fmt=args.format)
    kept = ", ".join((["EMA weights"] if summary["ema"] else []) + summary["metadata"])
    print(f"exported {summary['kind']} weights of {summary['source']} -> {summary['out']} ({summary['format']}): "
          f"{summary['tensors']} tensors, {summary['parameters']:,} parameters" + (f"; kept {kept}" if kept else ""))
    return 0


def cmd_bench_step(args) -> int:
    from dawn_train.bench.step import bench_step

    result = bench_step(args.config, steps=args.steps, warmup=args.warmup, overrides=args.override)
    _print_json_or_table(result, args.json, f"training step ({result['stage']})")
    return 0


def cmd_quality_report(args) -> int:
    from dawn_train.metrics.synthetic.results import write_results

    evals = {"Driven by ground-truth pose and blink": args.eval_gt}
    if args.eval_pbnet:
        evals["Driven by PBNet's pose and blinks"] = args.eval_pbnet
    path = write_results(args.out, evals, curves=args.curves, minutes=args.minutes, command=args.command)
    print(f"results: {path}")
    return 0


def cmd_report(args) -> int:
    from dawn_train.tracking.report import build_report

    result = build_report(args.runs, args.out, metrics=args.metric or None, wandb=args.wandb, publish_report=args.publish)
    print(f"report: {result['markdown']} (and report.html, plots, metrics.json in {result['markdown'].parent})")
    if result.get("wandb_url"):
        print(f"W&B report: {result['wandb_url']}")
    elif result.get("wandb_report"):
        print(f"W&B report definition (offline): {result['wandb_report']}; --publish (WANDB_MODE=online) would "
              f"create:\n{result['wandb_summary']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dawn_train.data.audio import FEATURE_KINDS
    from dawn_train.inference.generate import GenerateOptions
    from dawn_train.inference.pipeline import CHECKPOINT_WINDOW, window_arg

    parser = argparse.ArgumentParser(prog="dawn-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback (also: DAWN_DEBUG=1; "
                        "anywhere on the command line); errors otherwise print one line: exit 1, usage errors exit 2")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="build and check datasets (synth, shards, inspect)")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="render synthetic talking-head videos with ground truth")
    synth.add_argument("--out", required=True, help="output directory of prepared videos")
    synth.add_argument("--videos", type=int, default=32, help="number of videos (identities)")
    synth.add_argument("--seconds", type=float, default=4.0, help="duration of each video")
    synth.add_argument("--size", type=int, default=128, choices=(64, 128, 256), help="frame size in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=2, help="rendering processes")
    shards = data_commands.add_parser("shards", help="write WebDataset tar shards + manifest.json from prepared videos "
                                      "(unreadable videos are skipped and listed in failures.jsonl)")
    shards.add_argument("--src", required=True, help="directory of prepared videos (<id>.mp4/.wav/.npz/.json)")
    shards.add_argument("--out", required=True, help="shard directory, e.g. datasets/synth/shards (a rerun with the "
                        "same videos and options resumes; with others, its old shards are removed and rebuilt)")
    shards.add_argument("--val-fraction", type=float, default=0.1, help="fraction of videos held out for validation")
    shards.add_argument("--samples-per-shard", type=int, default=4)
    shards.add_argument("--chunk-frames", type=int, default=500, help="split longer videos into chunks (0: never)")
    shards.add_argument("--dataset", default=None, help="dataset name in sample keys (default: parent dir name)")
    shards.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    shards.add_argument("--split-file", action="append", metavar="FILE", help="an official split list, named "
                        "after what it lists (repeat the flag): test_ids.txt, excluded_ids.txt, test_speakers.txt, "
                        "excluded_speakers.txt, e.g. datasets/hdtf/test_ids.txt; test entries go to test shards, "
                        "excluded ones nowhere; speaker lists make every split speaker-disjoint")
    shards.add_argument("--features", choices=FEATURE_KINDS, default="logmel",
                        help="audio feature: the built-in 80-d log-mel, or HuBERT (official; needs --hubert-dir)")
    shards.add_argument("--hubert-dir", metavar="DIR", help="local HuBERT model directory, e.g. a copy of "
                        "facebook/hubert-large-ls960-ft (config.json, model.safetensors, preprocessor_config.json); "
                        "runs on the GPU when there is one")
    for sub in (synth, shards):
        sub.add_argument("--gop", type=int, default=10, help="H.264 keyframe interval (frames)")
        sub.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better)")
    prep = data_commands.add_parser("prep", help="raw videos -> prepared videos: 25 fps face crops, 16 kHz audio, "
                                    "pose, blink, face box, landmarks (needs the prep extra; failures go to "
                                    "failures.jsonl, finished videos are skipped on a rerun)")
    source = prep.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="directory of raw videos (searched recursively)")
    source.add_argument("--list", help="file with one raw video path per line")
    prep.add_argument("--out", required=True, help="prepared-video directory (what `data shards --src` reads)")
    prep.add_argument("--size", type=int, default=256, help="face crop side in pixels (128 or 256)")
    prep.add_argument("--crop-scale", type=float, default=1.8, help="crop side / face size (68-point box)")
    prep.add_argument("--max-gap", type=int, default=12, help="frames without a face filled in (more: the video fails)")
    prep.add_argument("--min-seconds", type=float, default=1.0, help="shorter videos fail")
    prep.add_argument("--slice", default="0/1", help="i/n: only inputs i, i+n, ... (SLURM array task i of n)")
    prep.add_argument("--workers", type=int, default=1, help="videos prepared side by side (processes)")
    prep.add_argument("--gop", type=int, default=10, help="H.264 keyframe interval of the crops (frames)")
    prep.add_argument("--crf", type=int, default=18, help="H.264 quality of the crops (lower is better)")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=cmd_data_prep)
    inspect = data_commands.add_parser("inspect", help="validate every sample of a shard directory and print counts")
    inspect.add_argument("shards", help="shard directory with manifest.json")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    probe = data_commands.add_parser("probe", help="train the synthetic-domain probe (mouth, eyes, pose, identity "
                                     "read from frames) that scores generated videos against the ground truth")
    probe.add_argument("--out", required=True, help="probe file, e.g. runs/synth_probe.pt")
    probe.add_argument("--steps", type=int, default=1000, help="optimizer steps (~7 CPU minutes at 1000)")
    probe.add_argument("--batch-size", type=int, default=64)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--eval-videos", type=int, default=8, help="held-out identities to measure its accuracy on")
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(func=cmd_data_probe)
    synth.set_defaults(func=cmd_data_synth)
    shards.set_defaults(func=cmd_data_shards)
    inspect.set_defaults(func=cmd_data_inspect)

    bench = commands.add_parser("bench", help="benchmarks (loader, ...)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")
    loader = bench_commands.add_parser("loader", help="training-stream throughput: clips/s, frames/s, MB/s")
    loader.add_argument("--shards", required=True)
    loader.add_argument("--stage", default="a2v", choices=("lfg", "pbnet", "a2v"))
    loader.add_argument("--clip-len", type=int, default=40, help="A2V clip length / PBNet window")
    loader.add_argument("--workers", type=int, default=1, help="dataloader worker processes")
    loader.add_argument("--batch-size", type=int, default=4)
    loader.add_argument("--batches", type=int, default=50, help="timed batches (after 2 warm-up batches)")
    loader.add_argument("--max-skip-fraction", type=float, default=0.1,
                        help="bad samples are skipped and counted (as in training) up to this fraction")
    loader.add_argument("--json", action="store_true")
    loader.set_defaults(func=cmd_bench_loader)
    bprep = bench_commands.add_parser("prep", help="data prep throughput on 720p input: videos/s and frames/s per core")
    bprep.add_argument("--seconds", type=float, default=10.0, help="length of each test video")
    bprep.add_argument("--videos", type=int, default=2, help="videos prepared one after the other")
    bprep.add_argument("--size", type=int, default=256, help="crop side")
    bprep.add_argument("--json", action="store_true")
    bprep.set_defaults(func=cmd_bench_prep)
    attention = bench_commands.add_parser("attention", help="banded vs full temporal attention: time and peak memory")
    attention.add_argument("--frames", type=int, default=200)
    attention.add_argument("--window", type=int, default=80, help="whole window in frames (paper count; 80 = +-40)")
    attention.add_argument("--positions", type=int, default=None,
                           help="sequences (batch x h x w); default 1024 on CUDA, 64 on CPU")
    attention.add_argument("--heads", type=int, default=8)
    attention.add_argument("--dim-head", type=int, default=32)
    sample = bench_commands.add_parser("sample", help="A2V-FDM DDIM generation of T frames, banded vs full attention")
    sample.add_argument("--frames", type=int, default=200)
    sample.add_argument("--window", type=int, default=80, help="whole window in frames (paper count; 80 = +-40)")
    sample.add_argument("--preset", default="demo", choices=("demo", "release"),
                        help="UNet size (release = 49.9 M params)")
    sample.add_argument("--latent", type=int, default=None, help="latent size h = R / 4 (default: preset's)")
    sample.add_argument("--steps", type=int, default=20, help="DDIM steps")
    sample.add_argument("--warmup", type=int, default=None,
                        help="untimed generations first (default: 1 on CUDA, 0 on CPU)")
    sample.add_argument("--quiet", action="store_true", help="no progress bars")
    for sub in (attention, sample):
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        sub.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
        sub.add_argument("--backend", default="math", choices=("math", "sdpa"), help="attention kernel")
        sub.add_argument("--repeats", type=int, default=None)
        sub.add_argument("--json", action="store_true")
    attention.set_defaults(func=cmd_bench_attention, repeats=3)
    sample.set_defaults(func=cmd_bench_sample, repeats=1)

    gen = commands.add_parser("generate", help="portrait + speech -> talking-head mp4 (A2V-FDM + LFG)")
    gen.add_argument("--image", required=True, help="portrait (face crop), any format PIL reads")
    gen.add_argument("--audio", required=True, help="speech, any format PyAV decodes (resampled to 16 kHz mono)")
    gen.add_argument("--out", required=True, help="output .mp4 (25 fps, H.264 + AAC)")
    gen.add_argument("--config",
                     help="generate YAML (keys: the options below, with _), e.g. experiments/demo/generate.yaml")
    GenerateOptions.add_arguments(gen)
    gen.add_argument("--quiet", action="store_true", help="no progress bars")
    gen.add_argument("--json", action="store_true", help="print the summary (or the memory refusal) as JSON")
    gen.set_defaults(func=cmd_generate)
    bgen = bench_commands.add_parser("generate", help="generate on long audio: peak memory and s per generated s, "
                                     "windows vs one pass (fresh process per case)")
    bgen.add_argument("--seconds", default="10,60,600", help="audio lengths, comma-separated")
    bgen.add_argument("--modes", default="windows,whole,dense",
                      help="windows (--chunk-seconds), whole (one pass), dense (one pass, official dense PBNet)")
    bgen.add_argument("--chunk-seconds", type=float, default=10.0, help="window length of the windows mode")
    bgen.add_argument("--chunk-overlap", type=float, default=2.0, help="cross-faded overlap of windows (seconds)")
    bgen.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    bgen.add_argument("--memory-budget", type=float, default=None,
                      help="GiB a case may use (default: available memory); cases estimated above are refused")
    bgen.add_argument("--decode-chunk", type=int, default=32, help="frames per LFG decode call")
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
    step.add_argument("--steps", type=int, default=10, help="timed optimizer steps (after warm-up)")
    step.add_argument("--warmup", type=int, default=2)
    step.add_argument("--override", action="append", default=[], help="extra CLI override, e.g. --override=--data.init_args.batch_size=2")
    step.add_argument("--json", action="store_true")
    step.set_defaults(func=cmd_bench_step)

    convert = commands.add_parser("convert-official", help="official DAWN checkpoint -> dawn_train checkpoint")
    convert.add_argument("kind", choices=("lfg", "a2v", "pbnet-pose", "pbnet-blink"))
    convert.add_argument("file", help="official file, e.g. LFG_128_1000ep.pth, DAWN_128.pth")
    convert.add_argument("--out", required=True, help="output file for `fit` (init_from) and `generate`")
    convert.set_defaults(func=cmd_convert_official)

    ev = commands.add_parser("eval", help="generate the test set with a checkpoint and report FID, FVD, LSE, CSIM, "
                             "BAS, Blink/s (paper Table 1 layout)")
    ev.add_argument("--ckpt", required=True, help="A2V-FDM checkpoint (EMA weights used when present)")
    ev.add_argument("--lfg", required=True, help="LFG checkpoint")
    ev.add_argument("--shards", required=True, help="shard directory with manifest.json")
    ev.add_argument("--split", default="val")
    ev.add_argument("--max-videos", type=int, default=None)
    ev.add_argument("--max-frames", type=int, default=200, help="frames per video (official: 200)")
    ev.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    ev.add_argument("--window-size", type=window_arg, default=CHECKPOINT_WINDOW,
                    help="sampling window in frames (paper count), 'none' = full attention (default: the checkpoint's)")
    ev.add_argument("--log-videos", type=int, default=4, help="generated videos (with audio) logged to W&B")
    ev.add_argument("--seed", type=int, default=1234)
    ev.add_argument("--pbnet-pose", default=None, help="drive pose by PBNet instead of the ground truth")
    ev.add_argument("--pbnet-blink", default=None)
    for name, what in (("fid", "pt_inception-2015-12-05-6726825d.pth"), ("i3d", "i3d_pretrained_400.pt"),
                       ("syncnet", "syncnet_v2.model"), ("arcface", "arcface iresnet100 backbone.pth")):
        ev.add_argument(f"--{name}-weights", default=None, help=f"{what} (missing: metric reported unavailable)")
    ev.add_argument("--device", default=None)
    ev.add_argument("--out", default=None, help="results JSON (default: runs/<name>/eval.json)")
    ev.add_argument("--no-wandb", action="store_true", help="do not log the W&B table")
    ev.add_argument("--probe", default=None, help="synthetic-probe file (dawn-train data probe): on synthetic shards, "
                    "ground-truth metrics of the generated frames beside the still-frame baseline, and BAS/Blink/s "
                    "measured on them (n/a without)")
    ev.add_argument("--goals", choices=("demo", "quality", "pbnet"), default=None,
                    help="with --probe: check the synthetic ground-truth metrics against the goals of `make demo` or "
                         "`make quality` (metrics/synthetic/goals.py), printed and saved in the results")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)

    report = commands.add_parser("report", help="compare runs: table of final metrics + plots (markdown, html)")
    report.add_argument("runs", nargs="+", help="run folders (runs/<name>), sweep folders (runs/sweeps/<name>) or "
                        "eval point folders; other folders a glob matches are skipped")
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--metric", action="append", default=[], help="table column (repeatable; default: val/eval)")
    report.add_argument("--wandb", action="store_true", help="also build the W&B Report (offline: its definition, "
                        "wandb_report.json, and what --publish would create)")
    report.add_argument("--publish", action="store_true", help="save the W&B Report to W&B and print its URL "
                        "(WANDB_MODE=online, logged in)")
    report.set_defaults(func=cmd_report)

    quality = commands.add_parser("quality-report", help="the synthetic quality results file (RESULTS.md): eval "
                                  "tables beside their baselines, goals met or not and what limits them, curves")
    quality.add_argument("--eval-gt", required=True, help="eval json (--probe --goals quality), ground-truth pose/blink")
    quality.add_argument("--eval-pbnet", default=None, help="eval json (--probe --goals pbnet), PBNet pose/blink")
    quality.add_argument("--curves", default=None, help="a `dawn-train report` folder: its PNG curves are copied")
    quality.add_argument("--minutes", type=float, default=None, help="wall-clock minutes of the whole recipe")
    quality.add_argument("--command", default="make quality", help="the command that produced the results")
    quality.add_argument("--out", required=True, help="folder of RESULTS.md (figures go to <out>/results/)")
    quality.set_defaults(func=cmd_quality_report)

    sweep = commands.add_parser("sweep", help="grid of config overrides -> SLURM job array (validate, render, submit)")
    sweep.add_argument("file", help="sweep file, e.g. experiments/ablations/window.yaml")
    sweep.add_argument("--submit", action="store_true", help="submit the rendered array with sbatch")
    sweep.add_argument("--dry-run", action="store_true", help="validate and render only (the default without --submit)")
    sweep.add_argument("--only-failed", action="store_true", help="only points that did not finish and are not queued")
    sweep.add_argument("--local", action="store_true", help="run the jobs here, one after the other (trainings "
                       "first), instead of submitting them")
    sweep.set_defaults(func=cmd_sweep)

    export = commands.add_parser("export", help="training checkpoint (DeepSpeed dir or .ckpt) -> weights file without DeepSpeed")
    export.add_argument("ckpt", help="DeepSpeed checkpoint directory (e.g. runs/x/checkpoints/last.ckpt/) or a .ckpt file")
    export.add_argument("--kind", required=True, choices=("lfg", "a2v", "pbnet-pose", "pbnet-blink"))
    export.add_argument("--out", required=True, help="output file (loads with checkpoints.load_model)")
    export.add_argument("--format", default="converted", choices=("converted", "state_dict"),
                        help="converted: weights + model config (default); state_dict: weights only")
    export.set_defaults(func=cmd_export)
    return parser


def run_command(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from dawn_train.stages.cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Run one command.  A known failure prints one line and returns 1, a config usage error 2 (argparse exits 2
    itself); `--debug` or DAWN_DEBUG=1 adds the traceback.  See dawn_train/launch/failures.py."""
    import traceback

    from dawn_train.launch.failures import classify, debug_requested
    from dawn_train.log import setup_logging

    setup_logging()
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    try:
        return run_command(argv)
    except Exception as exc:
        failure = classify(exc)
        if failure is None:  # a bug: Python's traceback
            raise
        if debug:
            traceback.print_exc()
        code, message = failure
        print(f"dawn-train: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
