"""`dawn-train bench generate`: peak memory and speed of `dawn-train generate` on long audio, with bounded
memory (windows) and in one pass.

Every case (a length from `--seconds` x a mode) runs `dawn-train generate --json` in a fresh Python process, whose
summary reports its peak resident set (`VmHWM`: that process image alone; `ru_maxrss` would include the parent's
size at fork) and its RSS once models and inputs are loaded: the difference is what the generation needs, the
figure the pre-flight estimate predicts.  On CUDA generate's `torch.cuda.max_memory_allocated` peak is reported
too.  Modes:

    windows   banded PBNet attention, A2V-FDM in `--chunk-seconds` windows (the bounded-memory path)
    whole     banded PBNet attention, every frame in one DDIM pass
    dense     one pass with the official dense (T x T) PBNet attention: the path before the banded one

Each child's pre-flight estimate (`inference/memory.py`) decides what runs: a case estimated above the memory
budget (`--memory-budget` GiB, default what the machine has available) is refused and shows its estimate only.
Speed is generate's own wall time (from loading the checkpoints to the muxed mp4) per second of generated
video.  Models: the given checkpoints, else tiny random models of the demo architecture
(`experiments/demo/`: 64 px LFG, A2V-FDM and PBNets), written to a temporary directory, so the benchmark
runs without training.  The input is a synthetic portrait and speech-like audio of each length.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from dawn_train import checkpoints
from dawn_train.bench.sample import PRESETS
from dawn_train.data.audio import write_wav
from dawn_train.data.schema import SAMPLE_RATE

MODES = ("windows", "whole", "dense")
# the architectures of experiments/demo/{lfg,pbnet,a2v_stage1}.yaml (tests/bench/test_bench_generate.py checks)
DEMO_LFG = {"class_path": "dawn_train.models.lfg.LatentFlowGenerator", "init_args": {
    "num_regions": 10,
    "region_predictor_params": {"block_expansion": 8, "max_features": 64, "num_blocks": 3},
    "bg_predictor_params": {"block_expansion": 8, "max_features": 64, "num_blocks": 3},
    "generator_params": {"block_expansion": 8, "max_features": 64, "num_bottleneck_blocks": 1,
                         "pixelwise_flow_predictor_params": {"block_expansion": 8, "max_features": 64,
                                                             "num_blocks": 3}}}}
DEMO_PBNET = {"audio_dim": 80, "pose_latent_dim": 16, "audio_latent_dim": 16, "ff_size": 32, "num_layers": 1,
              "num_heads": 4, "dim_head": 8, "dropout": 0.0, "max_len": 2000}
DEMO_PBNET_UNITS = {"pose_norm": "crop", "crop_size": 64, "audio_mean": -8.6, "audio_std": 3.8}
DEMO_A2V = {**PRESETS["demo"]["model"], "sampling_timesteps": 10, "objective": "pred_x0"}
DEMO_SIZE = 64
DEMO_REFERENCE = {"ref_pose_mean": [0.0, 0.0, 0.0, 0.67, 32.0, 34.0], "ref_blink_mean": [0.3, 0.3]}


@dataclass
class Models:
    lfg: str
    a2v: str
    pbnet_pose: Optional[str] = None
    pbnet_blink: Optional[str] = None


def write_demo_models(folder: str | Path, seed: int = 0) -> Models:
    """Tiny random LFG, A2V-FDM and PBNets of the demo architecture as converted checkpoints in `folder`."""
    folder = Path(folder)
    torch.manual_seed(seed)
    lfg = checkpoints.save_converted(checkpoints.build(DEMO_LFG), DEMO_LFG, "lfg", folder / "lfg.pt")
    a2v_config = {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": DEMO_A2V}
    record = {"image_size": DEMO_SIZE, "audio_feature": {"type": "logmel", "n_mels": 80}, **DEMO_REFERENCE}
    a2v = checkpoints.save_converted(checkpoints.build(a2v_config), a2v_config, "a2v", folder / "a2v.pt",
                                     metadata={"dawn_a2v": record})
    paths = []
    for kind, dims in (("pbnet-pose", {"pos_dim": 6, "eye_dim": 0}), ("pbnet-blink", {"pos_dim": 0, "eye_dim": 2})):
        config = {"class_path": "dawn_train.models.pbnet.PBNet", "init_args": {**DEMO_PBNET, **dims}}
        paths.append(checkpoints.save_converted(checkpoints.build(config), config, kind, folder / f"{kind}.pt",
                                                hparams=DEMO_PBNET_UNITS))
    return Models(str(lfg), str(a2v), str(paths[0]), str(paths[1]))


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Mono 16 kHz audio with the loudness rhythm of speech: voiced syllables (a 120-220 Hz harmonic tone,
    4-6 per second) separated by short pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 170 + 50 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6.28)), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.21 * t) > -0.8).astype(np.float64)
    return (0.25 * voice * syllables * pauses).astype(np.float32)


def portrait(size: int = DEMO_SIZE) -> np.ndarray:
    """A synthetic face-like uint8 (size, size, 3) image: skin ellipse, eyes and mouth on a gradient."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.3 + 0.4 * x, 0.4 + 0.2 * y, 0.6 - 0.3 * x], axis=-1)
    face = ((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.38) ** 2 < 1
    image[face] = (0.85, 0.68, 0.55)
    for cx in (0.4, 0.6):
        image[((x - cx) / 0.05) ** 2 + ((y - 0.45) / 0.03) ** 2 < 1] = (0.1, 0.1, 0.1)
    image[((x - 0.5) / 0.1) ** 2 + ((y - 0.72) / 0.03) ** 2 < 1] = (0.6, 0.2, 0.2)
    return (image * 255).astype(np.uint8)


def generate_command(case: dict) -> list[str]:
    """The `dawn-train generate ... --json` command line of one case."""
    models, work = Models(**case["models"]), Path(case["work"])
    args = [sys.executable, "-m", "dawn_train.cli", "generate", "--image", str(work / "face.png"),
            "--audio", str(work / "speech.wav"), "--out", str(work / "out.mp4"), "--lfg", models.lfg,
            "--a2v", models.a2v, "--seed", "0", "--decode-chunk", str(case["decode_chunk"]), "--json",
            "--no-crop"]  # a ready face crop: the bench measures generation, not face detection
    if models.pbnet_pose:
        args += ["--pbnet-pose", models.pbnet_pose, "--pbnet-blink", models.pbnet_blink]
    for flag, key in (("--steps", "steps"), ("--memory-budget", "budget_gib"), ("--device", "device"),
                      ("--size", "size"), ("--max-seconds", "max_seconds")):
        if case.get(key) is not None:
            args += [flag, str(case[key])]
    if case["mode"] == "windows":
        args += ["--chunk-seconds", str(case["chunk_seconds"]), "--chunk-overlap", str(case["chunk_overlap"])]
    if case["mode"] == "dense":
        args += ["--no-pbnet-banded"]
    if not case.get("progress"):
        args += ["--quiet"]
    return args


def run_child(case: dict) -> dict:
    """Run one case in a fresh interpreter; returns generate's JSON summary (or its refusal) and the process's
    wall time.  Memory: `measured_bytes` = the child's peak RSS (`VmHWM`, its own process image) minus its RSS
    once models and inputs were loaded, i.e. what the generation added (what the estimate predicts)."""
    work = Path(case["work"])
    write_wav(str(work / "speech.wav"), speech_like(case["seconds"]))
    from PIL import Image

    Image.fromarray(portrait(case.get("size") or DEMO_SIZE)).save(work / "face.png")
    start = time.perf_counter()
    with open(work / "stderr.txt", "w") as log:
        proc = subprocess.run(generate_command(case), stdout=subprocess.PIPE, text=True,
                              stderr=None if case.get("progress") else log)
    result = {"seconds": case["seconds"], "mode": case["mode"], "process_s": round(time.perf_counter() - start, 2)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        err = (work / "stderr.txt").read_text().strip()[-1500:]
        return {**result, "error": f"exit {proc.returncode}: {err}"}
    result.update(json.loads(lines[-1]))
    if "rss_peak_bytes" in result:
        result["measured_bytes"] = result["rss_peak_bytes"] - result["rss_before_bytes"]
    return result


def bench_generate(seconds: Sequence[float] = (10, 60, 600), modes: Sequence[str] = MODES, *,
                   models: Optional[Models] = None, chunk_seconds: float = 10.0, chunk_overlap: float = 2.0,
                   steps: Optional[int] = None, budget_gib: Optional[float] = None, device: Optional[str] = None,
                   decode_chunk: int = 32, size: Optional[int] = None, progress: bool = True) -> dict:
    """Run every (length, mode) case in a fresh process; returns {"cases": [...], settings}."""
    from tqdm.auto import tqdm

    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    common = {"chunk_seconds": chunk_seconds, "chunk_overlap": chunk_overlap, "steps": steps, "budget_gib": budget_gib,
              "device": device, "decode_chunk": decode_chunk, "size": size, "progress": progress}
    cases = []
    with tempfile.TemporaryDirectory(prefix="dawn-bench-generate-") as tmp:
        given = models is not None
        models = models or write_demo_models(tmp)
        plan = [(s, m) for s in seconds for m in modes]
        bar = tqdm(plan, desc="bench generate", unit="case", disable=not progress, dynamic_ncols=True)
        for length, mode in bar:
            bar.set_postfix_str(f"{length:g} s, {mode}")
            work = Path(tmp) / f"{length:g}-{mode}"
            work.mkdir()
            cases.append(run_child({**common, "seconds": float(length), "mode": mode, "models": vars(models),
                                    "work": str(work)}))
    return {"models": "given checkpoints" if given else "tiny random models of the demo architecture",
            "chunk_seconds": chunk_seconds, "chunk_overlap": chunk_overlap, "steps": steps, "cases": cases}


TABLE_COLUMNS = ("audio s", "frames", "mode", "s per generated s", "peak RSS MiB", "above loaded MiB",
                 "estimate MiB", "estimate / measured")


def table_rows(result: dict) -> list[list[str]]:
    """Rows of the printed table (:data:`TABLE_COLUMNS`): per length, the modes side by side."""
    def mib(n) -> str:
        return "-" if n is None else f"{n / 2 ** 20:,.0f}"

    rows = []
    for case in result["cases"]:
        head = [f"{case['seconds']:g}", str(case.get("frames") or "-"), case["mode"]]
        if "error" in case:
            rows.append(head + ["error", "-", "-", "-", case["error"].splitlines()[-1][:80]])
        elif "refused" in case:
            rows.append(head + ["refused", "-", "-", mib(case.get("estimate_bytes")),
                                f"> budget {mib(case.get('budget_bytes'))} MiB"])
        else:
            measured = case.get("measured_bytes")
            ratio = f"{case['memory_estimate_bytes'] / measured:.2f}" if measured and measured > 0 else "-"
            cuda = f" (CUDA peak {mib(case['cuda_peak_bytes'])})" if "cuda_peak_bytes" in case else ""
            rows.append(head + [f"{case['wall_seconds'] / case['seconds']:.2f}", mib(case["rss_peak_bytes"]) + cuda,
                                mib(measured), mib(case["memory_estimate_bytes"]), ratio])
    return rows
