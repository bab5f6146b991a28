"""`dawn-train convert-official|export`: official DAWN checkpoints in, plain weights files out."""
from __future__ import annotations

import argparse


def cmd_convert_official(args) -> int:
    from dawn_train.checkpoints import convert_official

    summary = convert_official(args.kind, args.file, args.out)
    print(f"converted official {summary['kind']} checkpoint {summary['source']} -> {summary['out']}: "
          f"{summary['tensors']} tensors, {summary['parameters']:,} parameters")
    return 0


def add_convert_command(commands: argparse._SubParsersAction) -> None:
    """`convert-official`, added to the top-level `commands`."""
    convert = commands.add_parser("convert-official", help="official DAWN checkpoint -> dawn_train checkpoint")
    convert.add_argument("kind", choices=("lfg", "a2v", "pbnet-pose", "pbnet-blink"))
    convert.add_argument("file", help="official file, e.g. LFG_128_1000ep.pth, DAWN_128.pth")
    convert.add_argument("--out", required=True, help="output file for `fit` (init_from) and `generate`")
    convert.set_defaults(func=cmd_convert_official)


def cmd_export(args) -> int:
    from dawn_train.checkpoints import export

    summary = export(args.ckpt, args.kind, args.out, fmt=args.format)
    kept = ", ".join((["EMA weights"] if summary["ema"] else []) + summary["metadata"])
    print(f"exported {summary['kind']} weights of {summary['source']} -> {summary['out']} ({summary['format']}): "
          f"{summary['tensors']} tensors, {summary['parameters']:,} parameters" + (f"; kept {kept}" if kept else ""))
    return 0


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """`export`, added to the top-level `commands`."""
    export = commands.add_parser("export", help="training checkpoint (DeepSpeed dir or .ckpt) -> weights file without DeepSpeed")
    export.add_argument("ckpt", help="DeepSpeed checkpoint directory (e.g. runs/x/checkpoints/last.ckpt/) or a .ckpt file")
    export.add_argument("--kind", required=True, choices=("lfg", "a2v", "pbnet-pose", "pbnet-blink"))
    export.add_argument("--out", required=True, help="output file (loads with checkpoints.load_model)")
    export.add_argument("--format", default="converted", choices=("converted", "state_dict"),
                        help="converted: weights + model config (default); state_dict: weights only")
    export.set_defaults(func=cmd_export)
