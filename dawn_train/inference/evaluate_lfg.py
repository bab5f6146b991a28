"""`dawn-train eval-lfg`: how well an LFG re-renders held-out clips from their own motion, on synthetic shards.

For every video of the split the first frame is the source and each real frame drives it: the LFG encodes the
(flow, occlusion) of the pair and decodes the frame.  Those reconstructions are the ceiling of any A2V-FDM that
drives this LFG (the "LFG ceiling" row of `dawn-train eval`), so an LFG ablation (regions, loss weights, flow
resolution) is judged on them without training an A2V-FDM.  They are scored by `SyntheticSuite` against the real
frames, beside the still frame (the source held) and the real frames through the probe (its floor): PSNR and SSIM
always; with a probe, mouth sync, Blink/s, pose and identity error, and each video's eye openness (real frames and
reconstruction, `blink_traces`: stored per video, drawn beside the json).  `goals="lfg"` checks that the ceiling leaves
room for the video goals of `make quality` (and the LFG's own >= 28 dB).
"""
from __future__ import annotations

import json

import torch

from dawn_train import checkpoints
from dawn_train.data import schema
from dawn_train.data.sample import decode_frames
from dawn_train.inference.evaluate import default_output, lfg_reconstruction, split_samples
from dawn_train.inference.outputs import check_output_file
from dawn_train.inference.pipeline import resolve_device
from dawn_train.metrics.blink import count_blinks
from dawn_train.metrics.synthetic import SyntheticSuite, mouth_from_landmarks
from dawn_train.metrics.synthetic.blink_traces import eye_openness, plot_blink_traces
from dawn_train.metrics.synthetic.goals import GOALS, check_goals, check_probe_request
from dawn_train.metrics.synthetic.metrics import frame_psnr


@torch.no_grad()
def evaluate_lfg(lfg: str, shards: str, *, split: str = "val", max_videos: int | None = None, max_frames: int = 200,
                 probe: str | None = None, goals: str | None = None, device: str | None = None,
                 out: str | None = None, progress: bool = True) -> dict:
    """Returns (and writes to `out`, default `runs/<name>/eval_lfg.json`) {"synthetic": rows, "unavailable",
    "settings", "videos": [{video_key, frames, psnr, eyes (with a probe)}], "goals" (with `goals`), "blink_figure"
    (with a probe), "out"}."""
    from tqdm.auto import tqdm

    check_probe_request(probe, goals)
    out_path = check_output_file(out if out else default_output(lfg, "eval_lfg.json"), "eval_lfg.json")
    dev = resolve_device(device)
    model = checkpoints.load_model(lfg, "lfg").eval().to(dev)
    suite = SyntheticSuite(probe).to(dev)
    per_video = []
    for parsed in tqdm(split_samples(shards, split), desc=f"eval-lfg ({split})", total=max_videos,
                       disable=not progress):
        if max_videos is not None and len(per_video) >= max_videos:
            break
        n = min(int(parsed["meta"]["n_frames"]), max_frames)
        real = torch.from_numpy(decode_frames(parsed, range(n))).to(dev).permute(0, 3, 1, 2).float() / 255
        reconstruction = lfg_reconstruction(model, real)  # (1, T, 3, H, W)
        pose = torch.as_tensor(parsed[schema.POSE][:n], dtype=torch.float32, device=dev)[None]
        mouth = None  # the true opening from synthetic lip landmarks, read only where the probe reads frames
        if probe:
            mouth = torch.as_tensor(mouth_from_landmarks(parsed[schema.MOUTH_LMK][:n]), device=dev)[None]
        suite.update(reconstruction, real[None], real[:1], pose, mouth=mouth)
        key = f"{parsed['meta'].get('video_id', len(per_video))}/{parsed['meta'].get('chunk', 0)}"
        per_video.append({"video_key": key, "frames": n, "psnr": float(frame_psnr(reconstruction[0], real).mean())})
        if suite.last_readings:  # with a probe: the frames behind Blink/s (the reconstruction is the LFG's ceiling)
            per_video[-1]["eyes"] = {"ground truth": eye_openness(suite.last_readings["ground truth"].eyes[0]),
                                     "LFG ceiling": eye_openness(suite.last_readings["generated"].eyes[0])}
    if not per_video:
        raise ValueError(f"{shards}: no usable '{split}' samples to evaluate")
    result = {"synthetic": suite.compute(), "unavailable": suite.unavailable,
              "settings": {"lfg": str(lfg), "shards": str(shards), "split": split, "videos": len(per_video),
                           "max_frames": max_frames, "probe": str(probe) if probe else None},
              "videos": per_video}
    if goals:
        result["goals"] = [c.as_dict() for c in check_goals(result["synthetic"], GOALS[goals])]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure = plot_blink_traces(per_video, out_path.with_name(out_path.stem + "_blinks.png"), title="LFG reconstruction")
    if figure is not None:
        result["blink_figure"] = str(figure)
    out_path.write_text(json.dumps(result, indent=1))
    result["out"] = str(out_path)
    return result


def format_lfg_table(result: dict, columns: tuple[str, ...]) -> list[list[str]]:
    """Rows for people: the LFG's reconstructions, the still frame, the real frames through the probe."""
    def cell(value):
        return "n/a" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"

    names = {"generated": "LFG reconstruction", "still frame": "still frame (baseline)",
             "ground truth": "real (probe floor)"}
    return [[label, *[cell(result["synthetic"][row].get(m)) for m in columns]] for row, label in names.items()
            if row in result["synthetic"]]


def video_lines(result: dict) -> list[str]:
    """One line per video: its reconstruction PSNR (an outlier clip shows here, not in the mean) and, with a probe,
    the blinks counted on the reconstruction and on the real frames."""
    def blinks(video):
        eyes = video.get("eyes")
        if not eyes:
            return ""
        return (f", blinks {count_blinks(eyes['LFG ceiling'])} (real frames: "
                f"{count_blinks(eyes['ground truth'])})")

    return [f"{v['video_key']}: {v['frames']} frames, PSNR {v['psnr']:.2f} dB{blinks(v)}" for v in result["videos"]]

