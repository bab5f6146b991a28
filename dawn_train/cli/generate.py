"""`dawn-train generate`: portrait + speech -> talking-head mp4."""
from __future__ import annotations

import argparse
import json


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


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """`generate`, added to the top-level `commands` (its options: `GenerateOptions.add_arguments`)."""
    from dawn_train.inference.options import GenerateOptions

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
