"""`dawn-train data synth|shards|prep|inspect|probe`: build and check datasets."""
from __future__ import annotations

import argparse
import json
import sys

from dawn_train.cli.arguments import non_negative_float, non_negative_int, positive_float, positive_int, seed_arg
from dawn_train.cli.output import print_json_or_table


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
    if summary["failed"] and not summary["done"]:
        # still exit 0: the recipes start `data shards` after the prep array with afterok, and one slice of a few
        # faceless videos must not cancel it; the failures are listed, and shards counts what is missing
        print(f"dawn-train: warning: all {summary['failed']} videos of slice {summary['slice']} that this run tried "
              f"failed (reasons in {args.out}/{FAILURES})", file=sys.stderr)
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


def cmd_data_probe(args) -> int:
    from dawn_train.metrics.synthetic import train_probe

    report = train_probe(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                         eval_videos=args.eval_videos)
    print_json_or_table({k: v for k, v in report.items() if not isinstance(v, (dict, list))}, args.json,
                         f"synthetic probe -> {args.out}")
    for size, accuracy in (report.get("eval") or {}).items():
        print(f"held-out accuracy at {size}: {json.dumps(accuracy)}")
    return 0


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    """`data` and its subcommands, added to the top-level `commands`."""
    from dawn_train.data.schema import FEATURE_KINDS

    data = commands.add_parser("data", help="build and check datasets (synth, prep, shards, inspect, probe)")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="render synthetic talking-head videos with ground truth")
    synth.add_argument("--out", required=True, help="output directory of prepared videos")
    synth.add_argument("--videos", type=positive_int, default=32, help="number of videos (identities)")
    synth.add_argument("--seconds", type=positive_float, default=4.0, help="duration of each video")
    synth.add_argument("--size", type=positive_int, default=128, choices=(64, 128, 256), help="frame size in pixels")
    synth.add_argument("--seed", type=seed_arg, default=0)
    synth.add_argument("--workers", type=non_negative_int, default=2, help="rendering processes")
    shards = data_commands.add_parser("shards", help="write WebDataset tar shards + manifest.json from prepared videos "
                                      "(unreadable videos are skipped and listed in failures.jsonl)")
    shards.add_argument("--src", required=True, help="directory of prepared videos (<id>.mp4/.wav/.npz/.json)")
    shards.add_argument("--out", required=True, help="shard directory, e.g. datasets/synth/shards (a rerun with the "
                        "same videos and options resumes; with others, its old shards are removed and rebuilt)")
    shards.add_argument("--val-fraction", type=non_negative_float, default=0.1, help="fraction of videos held out for validation")
    shards.add_argument("--samples-per-shard", type=positive_int, default=4)
    shards.add_argument("--chunk-frames", type=non_negative_int, default=500, help="split longer videos into chunks (0: never)")
    shards.add_argument("--dataset", default=None, help="dataset name in sample keys (default: parent dir name)")
    shards.add_argument("--seed", type=seed_arg, default=0, help="seed of the train/val split")
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
        sub.add_argument("--gop", type=non_negative_int, default=10, help="H.264 keyframe interval (frames)")
        sub.add_argument("--crf", type=non_negative_int, default=18, help="H.264 quality (lower is better)")
    prep = data_commands.add_parser("prep", help="raw videos -> prepared videos: 25 fps face crops, 16 kHz audio, "
                                    "pose, blink, face box, landmarks (needs the prep extra; failures go to "
                                    "failures.jsonl, finished videos are skipped on a rerun)")
    source = prep.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="directory of raw videos (searched recursively)")
    source.add_argument("--list", help="file with one raw video path per line")
    prep.add_argument("--out", required=True, help="prepared-video directory (what `data shards --src` reads)")
    prep.add_argument("--size", type=positive_int, default=256, help="face crop side in pixels (the released models: 128 or 256)")
    prep.add_argument("--crop-scale", type=positive_float, default=1.8, help="crop side / face size (68-point box)")
    prep.add_argument("--max-gap", type=non_negative_int, default=12, help="frames without a face filled in (more: the video fails)")
    prep.add_argument("--min-seconds", type=non_negative_float, default=1.0, help="shorter videos fail")
    prep.add_argument("--slice", default="0/1", help="i/n: only inputs i, i+n, ... (SLURM array task i of n)")
    prep.add_argument("--workers", type=non_negative_int, default=1, help="videos prepared side by side (processes)")
    prep.add_argument("--gop", type=non_negative_int, default=10, help="H.264 keyframe interval of the crops (frames)")
    prep.add_argument("--crf", type=non_negative_int, default=18, help="H.264 quality of the crops (lower is better)")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=cmd_data_prep)
    inspect = data_commands.add_parser("inspect", help="validate every sample of a shard directory and print counts")
    inspect.add_argument("shards", help="shard directory with manifest.json")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    probe = data_commands.add_parser("probe", help="train the synthetic-domain probe (mouth, eyes, pose, identity "
                                     "read from frames) that scores generated videos against the ground truth")
    probe.add_argument("--out", required=True, help="probe file, e.g. runs/synth_probe.pt")
    probe.add_argument("--steps", type=positive_int, default=1000, help="optimizer steps (~7 CPU minutes at 1000)")
    probe.add_argument("--batch-size", type=positive_int, default=64)
    probe.add_argument("--seed", type=seed_arg, default=0)
    probe.add_argument("--eval-videos", type=positive_int, default=8, help="held-out identities to measure its accuracy on")
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(func=cmd_data_probe)
    synth.set_defaults(func=cmd_data_synth)
    shards.set_defaults(func=cmd_data_shards)
    inspect.set_defaults(func=cmd_data_inspect)
