"""`dawn-train generate`: one portrait + speech -> talking-head mp4 (the official
`unified_video_generator.py` pipeline, spec section 6, without its hard-coded paths).

    image --(face found and cropped as prep crops, or with crop off (--no-crop) resized whole to R x R)--> reference frame
    audio --(any format PyAV reads -> 16 kHz mono)--> per-frame audio features (the feature the A2V
          checkpoint was trained with, `inference/audio_features.py`: log-mel, or HuBERT from `hubert_dir`;
          N = floor(seconds * 25) frames)
    pose/blink: PBNet samples (`pbnet_pose`/`pbnet_blink`), .npy files, or held at the reference state
    A2V-FDM: all N frames in one DDIM run (banded temporal attention keeps memory linear in N), or with
          `chunk_seconds` windows of S seconds cross-faded over `chunk_overlap` (memory of one window)
          -> latent flow + occlusion -> LFG decode, `decode_chunk` frames at a time, straight into the encoder
    -> mp4, 25 fps, H.264 + AAC with the audio muxed in (PyAV).

Long audio: the peak memory is estimated before the work (`inference/memory.py`) and a generation that does
not fit the device is refused with the estimate and what fits (`max_seconds`, `chunk_seconds`).  One pass
gives the most consistent motion (every frame planned with every other, within the attention windows);
windows bound the memory whatever the length, at the price of motion planned per window and blended at the
seams (`models/a2v/conditioning.sample_windows`).  Every phase shows progress on stderr.

Every option is a field of :class:`GenerateOptions`, the one spelling shared by the command line
(flags made from the fields), the `--config` YAML (keys = field names) and the Python API.

What is checked about the image: that it decodes, its mode (RGB is used as is; grayscale, palette, RGBA
and CMYK are converted with a message; other modes are refused), its size (at least 32 px) and that it is
not blank.  By default the face is found and cropped as `data prep` crops videos (`inference/source_image.py`:
any photo with one face, or `face_index`), and its measured pose, eye openness and face box are the reference
state (written beside the output as `<out stem>.crop.png` and `<out stem>.initial_state.json`).  With `crop: false` (`--no-crop`)
the image is used whole as the face crop, and the face box that conditions the model is the mean training box
recorded in the A2V checkpoint (or `face_box`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from dawn_train.data.audio import AudioError, decode_audio, n_video_frames
from dawn_train.data.hubert import check_model_dir
from dawn_train.data.schema import BLINK_DIM, FPS, POSE_DIM, SAMPLE_RATE
from dawn_train.data.video import encode_mp4
from dawn_train.inference.audio_features import audio_features, feature_kind, hubert_call_bytes, open_hubert
from dawn_train.inference.memory import check_fits, gib, memory_budget, process_rss
from dawn_train.inference.options import GenerateOptions
from dawn_train.inference.outputs import check_output_file
from dawn_train.inference.pipeline import Pipeline, load_pipeline
from dawn_train.inference.pose_blink import (
    GenerationRequest,
    PoseBlinkSource,
    pose_blink_from_files,
    pose_blink_from_pbnet,
)
from dawn_train.inference.source_image import ImageError, crop_source, read_image
from dawn_train.log import get_logger
from dawn_train.models.a2v.conditioning import check_guidance, window_spans

log = get_logger(__name__)


# ---- inputs -------------------------------------------------------------------------------------
def load_image(path: str | Path, size: int) -> np.ndarray:
    """Image file -> uint8 (size, size, 3) RGB, resized without cropping (as the official pipeline)."""
    from PIL import Image

    image = read_image(path)
    width, height = image.size
    if max(width, height) > 1.05 * min(width, height):
        log.warning("%s: %dx%d is not square; it is resized to %dx%d without cropping (crop it to the face to "
                    "avoid distortion)", path, width, height, size, size)
    array = np.array(image.resize((size, size), Image.BICUBIC), dtype=np.uint8)
    if array.std() < 1.0:
        raise ImageError(f"{path}: image is blank (constant colour)")
    return array


def load_audio(path: str | Path, max_seconds: Optional[float] = None) -> np.ndarray:
    """Any audio (or video) file PyAV can decode -> mono float32 (L,) at 16 kHz (channels averaged).
    Raises AudioError for unreadable, empty, too short (< 1 video frame) or silent audio."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: a folder, not an audio file" if path.is_dir() else f"{path}: no such audio file")
    audio, _ = decode_audio(path)
    if max_seconds is not None:
        if not max_seconds > 0:
            raise AudioError(f"{path}: --max-seconds must be > 0, got {max_seconds:g}")
        audio = audio[: int(max_seconds * SAMPLE_RATE)]
    if n_video_frames(len(audio)) < 1:
        raise AudioError(f"{path}: {len(audio) / SAMPLE_RATE:.3f} s of audio, shorter than one video frame (40 ms)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: audio contains NaN or inf")
    if np.abs(audio).max() < 1e-4:
        raise AudioError(f"{path}: audio is silent (peak {np.abs(audio).max():.1e})")
    return audio


def check_output(out: str | Path) -> Path:
    """The output path must be a new or existing .mp4 file in a writable place (checked before any work)."""
    return check_output_file(out, "talking.mp4", ".mp4", "the output is an MP4 video (H.264 + AAC)")


# ---- the pipeline -------------------------------------------------------------------------------
class LazyVideo:
    """The uint8 frames (N, R, R, 3) of a generation as `encode_mp4` reads them (shape, dtype, iteration), decoded
    from the latent motion `decode_chunk` frames at a time while the encoder pulls them: neither the float
    video nor the uint8 one is ever whole in memory.  `bar` (tqdm) counts the frames, then shows the mux."""

    ndim, dtype = 4, np.dtype(np.uint8)

    def __init__(self, chunks: Iterator[np.ndarray], n_frames: int, size: int, bar=None) -> None:
        self.chunks, self.shape, self.bar = chunks, (n_frames, size, size, 3), bar

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.chunks:
            yield from chunk
            if self.bar is not None:
                self.bar.update(len(chunk))
        if self.bar is not None:
            self.bar.set_description("mux audio")


def _phase(desc: str, total: int, progress: bool, unit: str = "it"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)


def chunk_frames(opts: GenerateOptions, n_frames: int) -> tuple[Optional[int], int]:
    """(frames per A2V window or None for one pass, overlap frames) from --chunk-seconds / --chunk-overlap."""
    if opts.chunk_seconds is None:
        return None, 0
    window = int(round(opts.chunk_seconds * FPS))
    overlap = int(round(opts.chunk_overlap * FPS))
    if window < 2:
        raise ValueError(f"--chunk-seconds {opts.chunk_seconds}: a window needs at least 2 frames (0.08 s)")
    if not 0 <= overlap <= window // 2:
        raise ValueError(f"--chunk-overlap {opts.chunk_overlap} s ({overlap} frames) must be between 0 and half a "
                         f"window ({window // 2} frames of --chunk-seconds {opts.chunk_seconds})")
    return (window if window < n_frames else None), overlap


@torch.no_grad()
def generate(image: str | Path, audio: str | Path, out: str | Path, options: Optional[GenerateOptions] = None, *,
             config: Optional[str | Path] = None, pose_blink_source: Optional[PoseBlinkSource] = None,
             pipeline: Optional[Pipeline] = None, progress: bool = True, **given) -> dict:
    """Write a talking-head mp4 to `out`; returns a summary dict.  Options: a :class:`GenerateOptions`,
    or the YAML `config` overridden by keyword arguments named as its fields.
    `pose_blink_source`: any callable(GenerationRequest) -> PoseBlink; default: PBNet / files / held state.
    `pipeline`: models already loaded (`load_pipeline`); then `lfg`/`a2v`/`pbnet_*`/`device`/`use_ema` are unused.

    Before any expensive work the peak memory is estimated (`inference/memory.py`) and compared with what the
    device has (or `memory_budget`): a generation that does not fit is refused with the estimate, the longest
    audio that fits and the largest `chunk_seconds` that fits.  Every phase shows a progress bar on stderr
    (`progress=False` hides them): features, PBNet, DDIM, decode + encode (then the audio mux)."""
    opts = options if options is not None else GenerateOptions.resolve(config, **given)
    if options is not None and (config or given):
        raise TypeError("generate: give either a GenerateOptions or config/keyword options, not both")
    if pipeline is None:
        for key in ("lfg", "a2v"):
            if not getattr(opts, key):
                raise ValueError(f"generate needs --{key} CHECKPOINT (or `{key}:` in the --config YAML)")
    out = check_output(out)
    guidance = check_guidance(opts.guidance)
    if opts.hubert_dir:  # a wrong path fails before any checkpoint is read
        check_model_dir(opts.hubert_dir)
    started = time.perf_counter()
    custom_source = pose_blink_source is not None

    # checkpoints first (fail before decoding anything expensive)
    pipe = pipeline or load_pipeline(opts.lfg, opts.a2v, pbnet_pose=opts.pbnet_pose, pbnet_blink=opts.pbnet_blink,
                                     device=opts.device, use_ema=opts.use_ema)
    pipe.set_window(opts.window_size)
    if pipe.pose_blink is not None:
        for model in pipe.pose_blink.models:
            model.decoder.banded = bool(opts.pbnet_banded)
    size = int(opts.size or pipe.image_size or 128)
    kind = None if opts.audio_feat_from else feature_kind(opts.features, pipe.info.audio_feature, pipe.audio_dim)
    hubert = open_hubert(opts.hubert_dir, pipe.info.audio_feature, pipe.audio_dim, pipe.device) \
        if kind == "hubert" else None

    # inputs
    photo = crop_source(image, size, opts.face_index, out) if opts.crop else None
    frame = load_image(image, size) if photo is None else photo.frame
    # the reference state: given, else measured on the photo, else the training data's mean
    ref_pose = opts.init_pose or (photo.pose if photo else None) or pipe.info.ref_pose_mean
    ref_blink = opts.init_blink or (photo.blink if photo else None) or pipe.info.ref_blink_mean
    wav = load_audio(audio, opts.max_seconds)
    n_frames = n_video_frames(len(wav))
    window, overlap = chunk_frames(opts, n_frames)
    dim = pipe.audio_dim
    if pose_blink_source is None and pipe.pose_blink is not None:
        init_pose, init_blink = ref_pose, ref_blink
        if init_pose is None or init_blink is None:
            raise ValueError(f"{opts.a2v}: records no mean reference pose/blink; give --init-pose and --init-blink")
        pose_blink_source = pose_blink_from_pbnet(pipe.pose_blink, init_pose, init_blink, opts.pose_from,
                                                  opts.blink_from)
        uses_pbnet = True
    else:
        uses_pbnet = False

    # memory: estimated from the loaded models and the frame count, refused before the work if it cannot fit
    decode_chunk = max(1, int(opts.decode_chunk))
    memory = pipe.memory_model(size=size, decode_chunk=decode_chunk, steps=opts.steps, pbnet=uses_pbnet)
    if hubert is not None:
        memory.feature_model_live = hubert_call_bytes(hubert)
    estimate = memory.estimate(n_frames, window, features=not opts.audio_feat_from)
    budget = memory_budget(pipe.device, opts.memory_budget)
    if pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipe.device)
    log.info("%d frames (%.1f s): estimated peak memory %s of %s %s", n_frames, n_frames / FPS, estimate.describe(),
             gib(budget), "budget" if opts.memory_budget is not None else "available")
    check_fits(estimate, budget, memory, FPS, "the --memory-budget" if opts.memory_budget is not None else "available")
    rss_before, _ = process_rss()

    if opts.audio_feat_from:
        feat = np.load(opts.audio_feat_from, allow_pickle=False).astype(np.float32)
        if feat.ndim != 2 or feat.shape[1] != dim or len(feat) < n_frames:
            raise ValueError(f"{opts.audio_feat_from}: audio features must be (>= {n_frames}, {dim}), got {feat.shape}")
        feat = feat[:n_frames]
    else:
        with _phase("audio features", n_frames, progress, "frame") as bar:
            feat = audio_features(wav, n_frames, pipe.info.audio_feature, dim, progress=bar.update, kind=kind,
                                  hubert=hubert)
        hubert = None  # its weights are not needed beyond this phase
    request = GenerationRequest(frame, wav, feat, n_frames, int(opts.seed))
    # cross-identity driving: the source's own state is the reference (given, else the training data's mean)
    source = pose_blink_source or pose_blink_from_files(opts.pose_from, opts.blink_from,
                                                        ref_pose, ref_blink)
    sampled = {"pose": uses_pbnet and pipe.pose_blink.pose_model is not None,
               "blink": uses_pbnet and pipe.pose_blink.blink_model is not None}
    motion_from = {part: "caller" if custom_source else "file" if given else "pbnet" if sampled[part] else "held"
                   for part, given in (("pose", opts.pose_from), ("blink", opts.blink_from))}
    with _phase("PBNet pose + blink" if uses_pbnet else "pose + blink", 1, progress) as bar:
        motion = source(request)
        bar.update()
    if motion.pose.shape != (n_frames, POSE_DIM) or motion.blink.shape != (n_frames, BLINK_DIM):
        raise ValueError(f"pose/blink source returned pose {motion.pose.shape} and blink {motion.blink.shape}, "
                         f"expected ({n_frames}, {POSE_DIM}) and ({n_frames}, {BLINK_DIM})")

    box = pipe.face_box(size, opts.face_box or (photo.face_box if photo else None))
    ref = torch.as_tensor(frame, device=pipe.device).permute(2, 0, 1)[None].float() / 255
    cond = pipe.condition(feat, motion)
    steps = pipe.sampling_steps(opts.steps)
    spans = window_spans(n_frames, window or n_frames, overlap)
    how = f"{len(spans)} windows of {window} frames" if window else f"{n_frames} frames"
    with _phase(f"DDIM ({how})", len(spans) * steps, progress, "step") as bar:
        def ticking(pairs):
            for pair in pairs:
                yield pair
                bar.update()

        x0 = pipe.sample_motion(ref, box, cond, seed=int(opts.seed), steps=opts.steps, eta=opts.eta, window=window,
                                overlap=overlap, progress=ticking, guidance=guidance)
    del cond
    out.parent.mkdir(parents=True, exist_ok=True)
    with _phase("decode + encode", n_frames, progress, "frame") as bar:
        video = LazyVideo(pipe.decode_frames(ref, x0, decode_chunk), n_frames, size, bar)
        data = encode_mp4(video, audio=wav)
    out.write_bytes(data)
    summary = {"out": str(out), "frames": n_frames, "seconds": n_frames / FPS, "size": size, "seed": int(opts.seed),
               "steps": steps, "guidance": guidance, "window_size": pipe.a2v.unet.window_size,
               "ema": pipe.info.ema, "pose_from": motion_from["pose"], "blink_from": motion_from["blink"],
               "device": str(pipe.device), "audio_feature": kind or "file", "face_box": box, "chunk_frames": window,
               "chunk_overlap_frames": overlap, "windows": len(spans), "wall_seconds": round(time.perf_counter() - started, 3),
               "memory_estimate_bytes": estimate.peak, "memory_budget_bytes": budget,
               "memory_phases_bytes": dict(estimate.phases)}
    summary.update(photo.files if photo else {})
    summary["rss_before_bytes"], summary["rss_peak_bytes"] = rss_before, process_rss()[1]  # process, bytes
    if pipe.device.type == "cuda":
        summary["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(pipe.device)
    return summary
