"""`dawn-train eval|eval-lfg|report|quality-report`: measure a checkpoint, compare runs, write the quality results."""
from __future__ import annotations

import argparse

from dawn_train.cli.arguments import non_negative_float, non_negative_int, positive_float, positive_int, seed_arg


def print_goals_and_output(result: dict, goals: str | None) -> None:
    """The goal verdicts (when checked) and where the results were written: the end of `eval` and `eval-lfg`."""
    if result.get("goals"):
        from dawn_train.metrics.synthetic.goals import GoalCheck, format_goals

        print(f"goals ({goals}):")
        for line in format_goals([GoalCheck(**check) for check in result["goals"]]):
            print(f"  {line}")
    print(f"results: {result['out']}")
    if result.get("blink_figure"):  # the frames behind the Blink/s figures, per video
        print(f"eye openness per video: {result['blink_figure']}")


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
                      log_videos=args.log_videos, goals=args.goals, guidance=args.guidance)
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
    print_goals_and_output(result, args.goals)
    return 0


def cmd_eval_lfg(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from dawn_train.inference.evaluate_lfg import evaluate_lfg, format_lfg_table, video_lines
    from dawn_train.metrics.synthetic import TABLE as SYNTHETIC_TABLE

    result = evaluate_lfg(args.lfg, args.shards, split=args.split, max_videos=args.max_videos,
                          max_frames=args.max_frames, probe=args.probe, goals=args.goals, device=args.device,
                          out=args.out, progress=not args.quiet)
    table = Table(title=f"LFG reconstructions of {result['settings']['videos']} {args.split} videos from their own "
                        f"motion (first frame = source), {args.max_frames} frames max")
    for column in ("", *SYNTHETIC_TABLE):
        table.add_column(column)
    for row in format_lfg_table(result, SYNTHETIC_TABLE):
        table.add_row(*row)
    Console(width=max(Console().width, 140)).print(table)
    for line in video_lines(result):
        print(f"  {line}")
    for name, reason in result["unavailable"].items():
        print(f"n/a {name}: {reason}")
    print_goals_and_output(result, args.goals)
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


def cmd_quality_report(args) -> int:
    from dawn_train.metrics.synthetic.results import write_results

    evals = {"Driven by ground-truth pose and blink": args.eval_gt}
    if args.eval_pbnet:
        evals["Driven by PBNet's pose and blinks"] = args.eval_pbnet
    path = write_results(args.out, evals, curves=args.curves, minutes=args.minutes, command=args.command,
                         probe=args.probe)
    print(f"results: {path}")
    return 0


def add_evaluate_commands(commands: argparse._SubParsersAction) -> None:
    """`eval`, `report` and `quality-report`, added to the top-level `commands`."""
    from dawn_train.inference.options import CHECKPOINT_WINDOW, window_arg

    ev = commands.add_parser("eval", help="generate the test set with a checkpoint and report FID, FVD, LSE, CSIM, "
                             "BAS, Blink/s (paper Table 1 layout)")
    ev.add_argument("--ckpt", required=True, help="A2V-FDM checkpoint (EMA weights used when present)")
    ev.add_argument("--lfg", required=True, help="LFG checkpoint")
    ev.add_argument("--shards", required=True, help="shard directory with manifest.json")
    ev.add_argument("--split", default="val")
    ev.add_argument("--max-videos", type=positive_int, default=None)
    ev.add_argument("--max-frames", type=positive_int, default=200, help="frames per video (official: 200)")
    ev.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default: the checkpoint's)")
    ev.add_argument("--guidance", type=positive_float, default=1.0, help="classifier-free guidance scale (1 = none, the "
                    "release's sampling; each step then calls the UNet twice)")
    ev.add_argument("--window-size", type=window_arg, default=CHECKPOINT_WINDOW,
                    help="sampling window in frames (paper count), 'none' = full attention (default: the checkpoint's)")
    ev.add_argument("--log-videos", type=non_negative_int, default=4, help="generated videos (with audio) logged to W&B")
    ev.add_argument("--seed", type=seed_arg, default=1234)
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

    lfg = commands.add_parser("eval-lfg", help="an LFG's reconstructions of held-out synthetic clips from their own "
                              "motion (the ceiling of any A2V-FDM driving it), beside the still frame")
    lfg.add_argument("--lfg", required=True, help="LFG checkpoint")
    lfg.add_argument("--shards", required=True, help="shard directory with manifest.json (synthetic for the probe)")
    lfg.add_argument("--split", default="val")
    lfg.add_argument("--max-videos", type=positive_int, default=None)
    lfg.add_argument("--max-frames", type=positive_int, default=200)
    lfg.add_argument("--probe", default=None, help="synthetic-probe file: mouth sync, Blink/s, pose and identity error "
                     "of the reconstructions (PSNR/SSIM only without)")
    lfg.add_argument("--goals", choices=("lfg", "quality", "demo"), default=None,
                     help="with --probe: 'lfg' checks that the reconstructions leave room for `make quality`'s video "
                          "goals and reach 28 dB (metrics/synthetic/goals.py)")
    lfg.add_argument("--device", default=None)
    lfg.add_argument("--out", default=None, help="results JSON (default: runs/<name>/eval_lfg.json)")
    lfg.add_argument("--quiet", action="store_true")
    lfg.set_defaults(func=cmd_eval_lfg)

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
    quality.add_argument("--minutes", type=non_negative_float, default=None, help="wall-clock minutes of the whole recipe")
    quality.add_argument("--command", default="make quality", help="the command that produced the results")
    quality.add_argument("--probe", default=None, help="the probe file the evals used: its accuracy is stated")
    quality.add_argument("--out", required=True, help="folder of RESULTS.md (figures go to <out>/results/)")
    quality.set_defaults(func=cmd_quality_report)
