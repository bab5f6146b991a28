"""`dawn-train eval`: generate the test set's videos with a checkpoint and report Table 1's metrics.

Protocol (the official evaluation, dawn_official_spec.md section 7): for every test video the
source is its first frame, with that frame's pose/blink as the initial state; audio, pose and
blink drive the generation from the video's own ground truth (or from PBNet with
`pbnet_pose`/`pbnet_blink`, the paper's setting for natural motion); up to `max_frames` frames
(200 = 8 s) in one non-autoregressive pass, DDIM 20 steps, fixed seed.  Metrics compare the
generated videos with the real ones (see `dawn_train/metrics/README.md` for each reference).
Results: a printed table in the paper's layout, a JSON file, and W&B (`tracking/eval_log.py`): an eval run with
the table, a per-video table with the first `log_videos` generated videos (with their audio), the checkpoint
artifact as its input, and the numbers written into the training run's summary.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dawn_train.data import schema
from dawn_train.data.sample import decode_frames, parse_sample
from dawn_train.data.shards import check_shards_match, iter_tar, load_manifest, shard_root
from dawn_train.data.video import encode_mp4
from dawn_train.inference.options import CHECKPOINT_WINDOW
from dawn_train.inference.outputs import check_output_file
from dawn_train.inference.pipeline import load_pipeline
from dawn_train.inference.pose_blink import PoseBlink
from dawn_train.log import get_logger
from dawn_train.metrics.suite import TABLE, MetricSuite
from dawn_train.metrics.synthetic import TABLE as SYNTHETIC_TABLE
from dawn_train.metrics.synthetic import SyntheticSuite, mouth_from_landmarks
from dawn_train.metrics.synthetic.blink_traces import eye_openness, plot_blink_traces
from dawn_train.metrics.synthetic.goals import GOALS, check_goals, check_probe_request
from dawn_train.models.a2v.conditioning import check_guidance
from dawn_train.tracking.eval_log import log_evaluation
from dawn_train.tracking.media import to_uint8_video
from dawn_train.tracking.paper import TABLE1_HDTF as PAPER_HDTF
from dawn_train.tracking.paper import TABLE1_HDTF_GROUND_TRUTH as PAPER_HDTF_GROUND_TRUTH

log = get_logger(__name__)
VIDEO_COLUMNS = ["video_key", "frames", "seed", "l1_to_real", "video"]
KEYS = (schema.FRAMES, schema.AUDIO, schema.AUDIO_FEAT, schema.POSE, schema.BLINK, schema.FACE_BOX, schema.MOUTH_LMK,
        schema.META)


def split_samples(shards: str | Path, split: str):
    """Every sample of `split`, parsed; bad ones are reported as they are met and skipped."""
    root, manifest = shard_root(shards), load_manifest(shards)
    if split not in manifest["splits"]:
        raise ValueError(f"{root}/manifest.json: no '{split}' split")
    for shard in manifest["splits"][split]["shards"]:
        bad: list[str] = []
        for raw in iter_tar(root / shard["name"], bad):
            try:
                yield parse_sample(raw, KEYS, manifest["feature"]["dim"])
            except ValueError as exc:
                bad.append(str(exc))
            while bad:
                log.warning("skipped bad sample: %s", bad.pop(0))
        for problem in bad:  # an unreadable tar is reported after its last readable sample
            log.warning("skipped bad sample: %s", problem)


def lfg_reconstruction(lfg, real: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
    """The clip re-rendered by the LFG from its own motion, its first frame the source: real (T, 3, H, W) in
    [0, 1] -> (1, T, 3, H, W) in [0, 1].  The best any A2V-FDM driving this LFG can do (its "ceiling")."""
    flow, occlusion = lfg.encode(real[:1], real[None], chunk_size=chunk_size)
    return lfg.decode(real[:1], flow, occlusion, chunk_size=chunk_size).clamp(0, 1)


def default_output(checkpoint: str | Path, name: str = "eval.json") -> Path:
    """`runs/<run>/<name>` for a checkpoint in `runs/<run>/checkpoints/`, else next to the file (`last.<name>`)."""
    path = Path(checkpoint)
    return path.parent.parent / name if path.parent.name == "checkpoints" else path.with_suffix("." + name)


@torch.no_grad()
def evaluate(a2v: str, lfg: str, shards: str, *, split: str = "val", weights: dict | None = None,
             max_videos: int | None = None, max_frames: int = 200, steps: int | None = None,
             window_size: int | str | None = CHECKPOINT_WINDOW, seed: int = 1234, pbnet_pose: str | None = None,
             pbnet_blink: str | None = None, device: str | None = None, out: str | None = None,
             log_wandb: bool = True, progress: bool = True, probe: str | None = None, log_videos: int = 4,
             goals: str | None = None, guidance: float = 1.0) -> dict:
    """`window_size`: frames, None / "none" (full attention) or "checkpoint" (its own).  `log_videos`: how many
    generated videos (mp4 with audio, `<out folder>/eval_videos/`) go into the W&B per-video table.
    `probe`: a synthetic-probe file (`dawn-train data probe`): on synthetic shards the generated frames are
    also scored against the ground truth (`metrics/synthetic`), beside the still-frame baseline, and BAS and
    Blink/s of the generated videos are measured on them (without a probe those two are n/a).  `goals`: "demo"
    or "quality" (`metrics/synthetic/goals.py`), checked on those metrics and saved as `goals`.  `guidance`: the
    classifier-free guidance scale of sampling (1 = none; `models/a2v/conditioning.sampling_kwargs`)."""
    from tqdm.auto import tqdm

    guidance = check_guidance(guidance)
    check_probe_request(probe, goals)
    if goals == "pbnet" and not (pbnet_pose and pbnet_blink):  # one PBNet: the other part would be the ground truth's
        raise ValueError("goals 'pbnet' judge PBNet's head motion and blinks: give both --pbnet-pose and --pbnet-blink")
    # before any model is loaded: a path that cannot be written fails now, not after the whole evaluation
    out_path = check_output_file(out if out else default_output(a2v), "eval.json")
    pipe = load_pipeline(lfg, a2v, pbnet_pose=pbnet_pose, pbnet_blink=pbnet_blink, device=device)
    try:  # a checkpoint trained on other frames or audio features than these shards is an error, not a number
        check_shards_match(load_manifest(shards), pipe.image_size, pipe.info.audio_feature, pipe.audio_dim)
    except ValueError as exc:
        raise ValueError(f"{shards} vs {a2v}: {exc}") from None
    pipe.set_window(window_size)
    dev = pipe.device
    suite = MetricSuite(weights).to(dev)
    for reason in suite.unavailable.values():
        log.warning("%s", reason)
    synthetic = SyntheticSuite(probe).to(dev) if probe else None
    for reason in (synthetic.unavailable.values() if synthetic else ()):
        log.warning("%s", reason)

    videos, per_video, traces = 0, [], []
    for parsed in tqdm(split_samples(shards, split), desc=f"eval ({split})", total=max_videos, disable=not progress):
        if max_videos is not None and videos >= max_videos:
            break
        n = min(int(parsed["meta"]["n_frames"]), max_frames)
        real = torch.from_numpy(decode_frames(parsed, range(n))).to(dev).permute(0, 3, 1, 2).float() / 255
        pose, blink = parsed[schema.POSE][:n], parsed[schema.BLINK][:n]
        motion = PoseBlink(pose, blink, pose[0], blink[0])
        feat = parsed[schema.AUDIO_FEAT][:n].astype(np.float32)
        if pipe.pose_blink is not None:
            sampled_pose, sampled_blink = pipe.pose_blink(feat, pose[0], blink[0], seed=seed + videos)
            motion = PoseBlink(pose if sampled_pose is None else sampled_pose.cpu().numpy(),  # a part without its
                               blink if sampled_blink is None else sampled_blink.cpu().numpy(),  # PBNet: ground truth
                               pose[0], blink[0])
        generated = pipe.animate(real[:1], parsed[schema.FACE_BOX][0], feat, motion, seed=seed + videos, steps=steps,
                                 guidance=guidance)
        audio = np.zeros(n * schema.SAMPLES_PER_FRAME, np.float32)
        wav = parsed[schema.AUDIO][: len(audio)]
        audio[: len(wav)] = wav

        def as_batch(a):
            return torch.as_tensor(np.asarray(a, np.float32), device=dev)[None]

        reading, eyes = None, None
        if synthetic is not None:
            mouth = mouth_from_landmarks(parsed[schema.MOUTH_LMK][:n])
            ceiling = lfg_reconstruction(pipe.lfg, real)
            reading = synthetic.update(generated[None].clamp(0, 1), real[None], real[:1], as_batch(motion.pose),
                                       mouth=as_batch(mouth), reconstruction=ceiling)
            if pose_blink_label(pipe) == "pbnet":  # PBNet's own motion, beside the video's: whose is an unmet goal
                synthetic.update_motion(as_batch(motion.pose), as_batch(motion.blink))
            if reading is not None:  # per-frame eye openness: where the Blink/s figures come from (blink_traces)
                eyes = {row: eye_openness(r.eyes[0]) for row, r in synthetic.last_readings.items()
                        if row in ("ground truth", "LFG ceiling", "generated")}
                eyes["driving"] = eye_openness(motion.blink)
        traces.append(eyes)
        suite.update(generated[None].clamp(0, 1), real[None], real[:1], as_batch(audio), as_batch(pose), as_batch(blink),
                     generated_pose=reading.pose if reading else None, generated_blink=reading.eyes if reading else None)
        key = f"{parsed['meta'].get('video_id', videos)}/{parsed['meta'].get('chunk', 0)}"
        mp4 = None
        if log_wandb and videos < log_videos:
            mp4 = out_path.parent / "eval_videos" / f"{videos:03d}.mp4"
            mp4.parent.mkdir(parents=True, exist_ok=True)
            mp4.write_bytes(encode_mp4(to_uint8_video(generated.clamp(0, 1)), audio=audio,
                                       sample_rate=schema.SAMPLE_RATE))
        l1 = float((generated.clamp(0, 1) - real).abs().mean())
        per_video.append([key, n, seed + videos, l1, str(mp4) if mp4 else None])
        videos += 1
    if videos == 0:
        raise ValueError(f"{shards}: no usable '{split}' samples to evaluate")
    rows = suite.compute()
    result = {
        "metrics": rows["generated"], "ground_truth": rows["ground truth"], "unavailable": suite.unavailable,
        "synthetic": synthetic.compute() if synthetic is not None else None,
        "settings": {"a2v": str(a2v), "lfg": str(lfg), "shards": str(shards), "split": split, "videos": videos,
                     "max_frames": max_frames, "steps": pipe.sampling_steps(steps), "guidance": guidance,
                     "window_size": pipe.a2v.unet.window_size, "seed": seed, "ema": pipe.info.ema,
                     "pose_blink": pose_blink_label(pipe)},
    }
    result["videos"] = [dict(zip(VIDEO_COLUMNS, row)) for row in per_video]
    for video, eyes in zip(result["videos"], traces):
        if eyes:
            video["eyes"] = eyes
    if goals:
        result["goals"] = [c.as_dict() for c in check_goals(result["synthetic"], GOALS[goals])]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # each video's eye openness drawn beside the json (`<name>_blinks.png`): the frames behind the Blink/s figures
    figure = plot_blink_traces(result["videos"], out_path.with_name(out_path.stem + "_blinks.png"),
                               title=f"pose/blink from {result['settings']['pose_blink']}")
    if figure is not None:
        result["blink_figure"] = str(figure)
    if log_wandb:
        table = [[name, *[rows[name].get(m) for m in TABLE]] for name in ("ground truth", "generated")]
        result["wandb"] = log_evaluation(out_path.parent, a2v, result["settings"], ["row", *TABLE], table,
                                         rows["generated"], VIDEO_COLUMNS, per_video,
                                         images={"eval/blinks": figure} if figure else None)
    out_path.write_text(json.dumps(result, indent=1))
    result["out"] = str(out_path)
    return result


def pose_blink_label(pipe) -> str:
    """Where an eval's driving pose and blink come from: "pbnet", "ground truth", or the mix of one PBNet."""
    if pipe.pose_blink is None:
        return "ground truth"
    kind = pipe.pose_blink.describe()
    return {"pbnet pose": "pbnet pose, ground-truth blink", "pbnet blink": "pbnet blink, ground-truth pose"}.get(kind,
                                                                                                              kind)


def format_table(result: dict) -> list[list[str]]:
    """Rows of the paper's Table 1 layout: this test set's real videos, this checkpoint, then the paper's DAWN and
    ground-truth rows (HDTF)."""
    def cell(value):
        return "-" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"

    rows = [["ground truth", *[cell(result["ground_truth"].get(m)) for m in TABLE]],
            ["this checkpoint", *[cell(result["metrics"].get(m)) for m in TABLE]],
            ["DAWN paper (HDTF)", *[cell(PAPER_HDTF[m]) for m in TABLE]],
            ["ground truth, paper (HDTF)", *[cell(PAPER_HDTF_GROUND_TRUTH.get(m)) for m in TABLE]]]
    return rows


def format_synthetic_table(result: dict) -> list[list[str]]:
    """Rows of the synthetic ground-truth table: this checkpoint, the still-frame baseline (the source held),
    the LFG ceiling (the real clip re-rendered from its own motion) and the real frames through the probe (its
    own error floor).  Empty without a probe."""
    synthetic = result.get("synthetic")
    if not synthetic:
        return []

    def cell(value):
        return "n/a" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"

    names = {"generated": "this checkpoint", "still frame": "still frame (baseline)",
             "LFG ceiling": "LFG, ground-truth motion (ceiling)",
             "PBNet motion": "PBNet's sampled motion (its signals, not a video)", "ground truth": "real (probe floor)"}
    return [[label, *[cell(synthetic[row].get(m)) for m in SYNTHETIC_TABLE]] for row, label in names.items()
            if row in synthetic]
