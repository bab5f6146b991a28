"""`dawn-train`: the one command line of dawn_train.

    dawn-train data synth|shards|inspect ...   build and check datasets
    dawn-train bench loader ...                throughput figures
    dawn-train fit|validate|test -c CONFIG     training (LightningCLI, once a stage is configured)

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
    from dawn_train.data.shards import write_shards
    from dawn_train.data.video import Encoding

    manifest = write_shards(args.src, args.out, val_fraction=args.val_fraction, samples_per_shard=args.samples_per_shard,
                            chunk_frames=args.chunk_frames, dataset=args.dataset, seed=args.seed,
                            encoding=Encoding(gop=args.gop, crf=args.crf))
    for split, info in manifest["splits"].items():
        print(f"{split}: {len(info['shards'])} shards, {info['videos']} videos, {info['samples']} samples, "
              f"{info['frames']} frames")
    print(f"manifest: {args.out}/manifest.json")
    return 0


def cmd_data_inspect(args) -> int:
    from dawn_train.data.shards import inspect_shards

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
        print(f"{len(report['bad'])} bad samples" if report["bad"] else "all samples valid")
    mismatch = any(c.get("samples", 0) != c["manifest_samples"] for c in report["splits"].values())
    return 1 if report["bad"] or mismatch else 0


def cmd_bench_loader(args) -> int:
    from dawn_train.bench.loader import bench_loader

    result = bench_loader(args.shards, stage=args.stage, clip_len=args.clip_len, workers=args.workers,
                          batch_size=args.batch_size, batches=args.batches)
    _print_json_or_table(result, args.json, f"loader throughput ({args.stage})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dawn-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    shards = data_commands.add_parser("shards", help="write WebDataset tar shards + manifest.json from prepared videos")
    shards.add_argument("--src", required=True, help="directory of prepared videos (<id>.mp4/.wav/.npz/.json)")
    shards.add_argument("--out", required=True, help="shard directory, e.g. datasets/synth/shards")
    shards.add_argument("--val-fraction", type=float, default=0.1, help="fraction of videos held out for validation")
    shards.add_argument("--samples-per-shard", type=int, default=4)
    shards.add_argument("--chunk-frames", type=int, default=500, help="split longer videos into chunks (0: never)")
    shards.add_argument("--dataset", default=None, help="dataset name in sample keys (default: parent dir name)")
    shards.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    for sub in (synth, shards):
        sub.add_argument("--gop", type=int, default=10, help="H.264 keyframe interval (frames)")
        sub.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better)")
    inspect = data_commands.add_parser("inspect", help="validate every sample of a shard directory and print counts")
    inspect.add_argument("shards", help="shard directory with manifest.json")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
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
    loader.add_argument("--json", action="store_true")
    loader.set_defaults(func=cmd_bench_loader)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from dawn_train.stages.cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"dawn-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
