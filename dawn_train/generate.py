"""`dawn-train generate`: one portrait + speech -> talking-head mp4 (the official
`unified_video_generator.py` pipeline, spec section 6, without its hard-coded paths).

    image --(RGB, resized to R x R without cropping)--> reference frame
    audio --(any format PyAV reads -> 16 kHz mono)--> per-frame audio features (the feature the A2V
          checkpoint was trained with; N = floor(seconds * 25) frames)
    pose/blink sequence: `pose_blink_source` hook (PBNet plugs in here); default = given .npy files,
          else held at the reference frame's state (zero deltas)
    A2V-FDM: all N frames in one DDIM run (non-autoregressive; banded temporal attention keeps memory
          linear in N) -> latent flow + occlusion -> LFG decode (chunked over time)
    -> mp4, 25 fps, H.264 + AAC with the audio muxed in (PyAV).

What is checked about the image: that it decodes, its mode (RGB is used as is; grayscale, palette, RGBA
and CMYK are converted with a message; other modes are refused), its size (at least 32 px) and that it is
not blank.  There is no face detector in dawn_train: a missing face cannot be detected, the image is used
as the face crop (crop it to the face first, as the training data is), and the face box that conditions the
model is the mean training box recorded in the A2V checkpoint (or `face_box`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from dawn_train.data.audio import AudioError, LogMelSpec, log_mel, n_video_frames
from dawn_train.data.schema import BLINK_DIM, FPS, POSE_DIM, SAMPLE_RATE
from dawn_train.data.video import encode_mp4

DEFAULT_FACE_BOX = (0.2, 0.15, 0.8, 0.9)  # (x0, y0, x1, y1) / size when the checkpoint records none
CONVERTIBLE_MODES = {"L", "LA", "P", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "I;16"}


class ImageError(ValueError):
    """Unusable input image; the message names the file."""


# ---- inputs -------------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"[generate] {message}", file=sys.stderr)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Image file -> uint8 (size, size, 3) RGB, resized without cropping (as the official pipeline)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as handle:
            handle.load()
            image = handle.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: cannot be read as an image ({exc})") from exc
    if image.mode != "RGB":
        if image.mode not in CONVERTIBLE_MODES:
            raise ImageError(f"{path}: image mode {image.mode!r} is not supported; save it as 8-bit RGB")
        _say(f"{path}: converting {image.mode} image to RGB" + (" (alpha dropped)" if "A" in image.mode else ""))
        image = image.convert("RGB")
    width, height = image.size
    if min(width, height) < 32:
        raise ImageError(f"{path}: image is {width}x{height}, too small for a face (need at least 32 px)")
    if max(width, height) > 1.05 * min(width, height):
        _say(f"{path}: {width}x{height} is not square; it is resized to {size}x{size} without cropping "
             "(crop it to the face to avoid distortion)")
    array = np.array(image.resize((size, size), Image.BICUBIC), dtype=np.uint8)
    if array.std() < 1.0:
        raise ImageError(f"{path}: image is blank (constant colour)")
    return array


def load_audio(path: str | Path, max_seconds: Optional[float] = None) -> np.ndarray:
    """Any audio (or video) file PyAV can decode -> mono float32 (L,) at 16 kHz (channels averaged).
    Raises AudioError for unreadable, empty, too short (< 1 video frame) or silent audio."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(container.streams.audio[0]):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except AudioError:
        raise
    except Exception as exc:  # PyAV raises av.error.* (InvalidDataError, ...) for broken files
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if max_seconds is not None:
        audio = audio[: int(max_seconds * SAMPLE_RATE)]
    if n_video_frames(len(audio)) < 1:
        raise AudioError(f"{path}: {len(audio) / SAMPLE_RATE:.3f} s of audio, shorter than one video frame (40 ms)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: audio contains NaN or inf")
    if np.abs(audio).max() < 1e-4:
        raise AudioError(f"{path}: audio is silent (peak {np.abs(audio).max():.1e})")
    return audio


def audio_features(audio: np.ndarray, n_frames: int, feature: Optional[dict], dim: int) -> np.ndarray:
    """The per-frame feature the A2V model was trained with: (n_frames, dim) float32.

    `feature` is the shard manifest's spec recorded in the checkpoint; without one, a `dim` of 80 means
    the built-in log-mel and 1024 the official HuBERT feature."""
    kind = (feature or {}).get("type") or ("logmel" if dim == LogMelSpec().dim else "hubert" if dim == 1024 else None)
    if kind == "logmel":
        fields = {k: v for k, v in (feature or {}).items() if k in LogMelSpec.__dataclass_fields__}
        spec = LogMelSpec(**fields)
        if spec.dim != dim:
            raise ValueError(f"the checkpoint's log-mel feature is {spec.dim}-d but the model expects {dim}")
        # shards store features as float16: round the same way
        return log_mel(audio, n_frames, spec).astype(np.float16).astype(np.float32)
    if kind == "hubert":
        raise NotImplementedError(
            "this A2V checkpoint was trained on HuBERT features (hubert-large-ls960-ft, 1024-d, last layer resampled "
            "to 25 fps), which dawn_train does not compute yet; pass precomputed features with "
            "--audio-feat-from FEATS.npy (shape (frames, 1024))")
    raise ValueError(f"unknown audio feature {feature!r} for a {dim}-d model; pass --audio-feat-from FEATS.npy")


# ---- pose / blink (PBNet hook) ------------------------------------------------------------------
@dataclass
class PoseBlink:
    """Driving pose/blink (raw units, see `data/schema.py`): pose (N, 6), blink (N, 2), and the
    reference frame's state ref_pose (6,), ref_blink (2,).  The model sees pose - ref_pose, blink - ref_blink."""

    pose: np.ndarray
    blink: np.ndarray
    ref_pose: np.ndarray
    ref_blink: np.ndarray


@dataclass
class GenerationRequest:
    """What a pose/blink source gets: the reference image (R, R, 3) uint8, the 16 kHz audio (L,), its
    per-frame features (N, D), the frame count N and the seed."""

    image: np.ndarray
    audio: np.ndarray
    audio_feat: np.ndarray
    n_frames: int
    seed: int


PoseBlinkSource = Callable[[GenerationRequest], PoseBlink]


def _sequence(path: str | Path, dim: int, n_frames: int, what: str) -> np.ndarray:
    array = np.load(path, allow_pickle=False).astype(np.float32)
    if what == "pose" and array.ndim == 2 and array.shape[1] == 7:
        _say(f"{path}: 7-column pose (official 3DDFA layout), dropping tz")
        array = array[:, :6]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{path}: {what} must have shape (frames, {dim}), got {array.shape}")
    if len(array) < n_frames:
        raise ValueError(f"{path}: {len(array)} {what} rows, the audio needs {n_frames} frames")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: {what} contains NaN or inf")
    return array[:n_frames]


def pose_blink_from_files(pose_from: Optional[str] = None, blink_from: Optional[str] = None) -> PoseBlinkSource:
    """Pose/blink from .npy files ((N, 6) or official (N, 7); (N, 2)); a file's first row is taken as the
    reference frame's state.  What is not given is held at the reference state (zero deltas)."""

    def source(request: GenerationRequest) -> PoseBlink:
        n = request.n_frames
        pose = _sequence(pose_from, POSE_DIM, n, "pose") if pose_from else np.zeros((n, POSE_DIM), np.float32)
        blink = _sequence(blink_from, BLINK_DIM, n, "blink") if blink_from else np.zeros((n, BLINK_DIM), np.float32)
        return PoseBlink(pose, blink, pose[0].copy(), blink[0].copy())

    return source


def pose_blink_from_pbnet(pose_ckpt: Optional[str], blink_ckpt: Optional[str], init_pose, init_blink,
                          pose_from: Optional[str] = None, blink_from: Optional[str] = None,
                          device: str | torch.device = "cpu") -> PoseBlinkSource:
    """Pose/blink sampled by the trained PBNets from the audio features (seeded by the request), starting
    from the reference image's state `init_pose` (6,), `init_blink` (2,).  A part given as a file
    (`pose_from`/`blink_from`, e.g. another video's signals) is taken from the file instead."""
    from dawn_train.stages.pose_blink import PoseBlinkSampler

    sampler = PoseBlinkSampler.from_checkpoints(pose_ckpt, blink_ckpt, device=device)
    files = pose_blink_from_files(pose_from, blink_from)
    init_pose, init_blink = np.asarray(init_pose, np.float32), np.asarray(init_blink, np.float32)

    def source(request: GenerationRequest) -> PoseBlink:
        pose, blink = sampler(request.audio_feat, init_pose, init_blink, seed=request.seed)
        pose, blink = pose.cpu().numpy(), blink.cpu().numpy()
        given = files(request)
        if pose_from:
            pose, ref_pose = given.pose, given.ref_pose
        else:
            ref_pose = init_pose
        if blink_from:
            blink, ref_blink = given.blink, given.ref_blink
        else:
            ref_blink = init_blink
        return PoseBlink(pose, blink, ref_pose, ref_blink)

    return source


# ---- models -------------------------------------------------------------------------------------
def load_a2v(path: str | Path, use_ema: bool = True) -> tuple[torch.nn.Module, dict]:
    """A2V model (EMA weights of an A2VStage checkpoint when present) and what its checkpoint records
    (`image_size`, `audio_feature`, `face_box_mean`, `ema`)."""
    from dawn_train import checkpoints
    from dawn_train.stages.a2v import ema_state_dict

    raw = checkpoints.read(path)
    model = checkpoints.build(checkpoints.model_config(raw, "a2v"))
    ema = ema_state_dict(raw) if use_ema else None
    state = ema if ema is not None else checkpoints.detect_state_dict(raw, "a2v", path)
    checkpoints.load_strict(model, state, path)
    info = dict(raw.get("dawn_a2v") or {})
    info["ema"] = ema is not None
    return model.eval(), info


# ---- output -------------------------------------------------------------------------------------
def to_uint8_video(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> uint8 (T, H, W, 3)."""
    return (video.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


# ---- the pipeline -------------------------------------------------------------------------------
GENERATE_KEYS = ("lfg", "a2v", "seed", "window_size", "steps", "eta", "size", "face_box", "device",
                 "decode_chunk", "max_seconds", "use_ema", "pose_from", "blink_from", "audio_feat_from",
                 "pbnet_pose", "pbnet_blink", "init_pose", "init_blink")


def read_config(path: str | Path) -> dict:
    """A generate YAML: any of GENERATE_KEYS (unknown keys are an error naming the file)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(data) - set(GENERATE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid: {list(GENERATE_KEYS)}")
    return data


@torch.no_grad()
def animate(lfg_model: torch.nn.Module, a2v_model: torch.nn.Module, ref: torch.Tensor, box: Sequence[float],
            audio_feat: np.ndarray, motion: PoseBlink, *, seed: int = 0, steps: Optional[int] = None,
            eta: Optional[float] = None, decode_chunk: int = 32, progress: bool = False) -> torch.Tensor:
    """The core of generation: every frame's flow in one non-autoregressive DDIM run, then LFG decoding.

    ref: (1, 3, R, R) reference image in [0, 1]; box: its face box (x0, y0, x1, y1) in pixels;
    audio_feat: (N, D); motion: driving pose/blink and the reference state.  Returns (N, 3, R, R) in [0, 1]."""
    from tqdm.auto import tqdm

    from dawn_train.stages.a2v import condition, face_box_vector, latent_motion

    dev, size = ref.device, ref.shape[-1]
    tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)[None]  # noqa: E731
    box6 = face_box_vector(tensor(box), size, size)
    cond = condition(tensor(audio_feat), tensor(motion.pose), tensor(motion.blink), tensor(motion.ref_pose),
                     tensor(motion.ref_blink))
    ref_fea = lfg_model.reference_feature(ref)
    n_frames = cond.shape[1]
    generator = torch.Generator(device=dev).manual_seed(int(seed))
    wrap = lambda it: tqdm(it, desc=f"DDIM ({n_frames} frames)", disable=not progress)  # noqa: E731
    kwargs = {"eta": eta} if eta is not None else {}
    x0 = a2v_model.sample(ref_fea, box6, cond, generator=generator, sampling_timesteps=steps, progress=wrap, **kwargs)
    flow, occlusion = latent_motion(x0.float())
    return lfg_model.decode(ref, flow, occlusion, chunk_size=decode_chunk)[0]


@torch.no_grad()
def generate(image: str | Path, audio: str | Path, out: str | Path, *, config: Optional[str | Path] = None,
             lfg: Optional[str] = None, a2v: Optional[str] = None, pose_from: Optional[str] = None,
             blink_from: Optional[str] = None, audio_feat_from: Optional[str] = None, seed: Optional[int] = None,
             window_size: Optional[int] = None, steps: Optional[int] = None, eta: Optional[float] = None,
             size: Optional[int] = None, face_box: Optional[Sequence[float]] = None, device: Optional[str] = None,
             decode_chunk: Optional[int] = None, max_seconds: Optional[float] = None, use_ema: Optional[bool] = None,
             pbnet_pose: Optional[str] = None, pbnet_blink: Optional[str] = None,
             init_pose: Optional[Sequence[float]] = None, init_blink: Optional[Sequence[float]] = None,
             pose_blink_source: Optional[PoseBlinkSource] = None, progress: bool = True) -> dict:
    """Write a talking-head mp4 to `out`; returns a summary dict.  Arguments given here override the
    YAML `config`.  `window_size` is in the model's convention (paper count by default: 80 = +-40 frames;
    None keeps the checkpoint's).  `face_box`: (x0, y0, x1, y1) in pixels of the resized R x R image.
    `pbnet_pose`/`pbnet_blink`: PBNet checkpoints that sample pose/blink from the audio, starting at
    `init_pose`/`init_blink` (default: the A2V training data's mean reference state).
    `pose_blink_source`: any callable(GenerationRequest) -> PoseBlink; default: PBNet / files / held state."""
    from dawn_train import checkpoints

    given = dict(lfg=lfg, a2v=a2v, pose_from=pose_from, blink_from=blink_from, audio_feat_from=audio_feat_from,
                 seed=seed, window_size=window_size, steps=steps, eta=eta, size=size, face_box=face_box, device=device,
                 decode_chunk=decode_chunk, max_seconds=max_seconds, use_ema=use_ema, pbnet_pose=pbnet_pose,
                 pbnet_blink=pbnet_blink, init_pose=init_pose, init_blink=init_blink)
    opts = {**(read_config(config) if config else {}), **{k: v for k, v in given.items() if v is not None}}
    for key in ("lfg", "a2v"):
        if not opts.get(key):
            raise ValueError(f"generate needs --{key} CHECKPOINT (or `{key}:` in the --config YAML)")
    seed = int(opts.get("seed", 0))
    dev = torch.device(opts.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))

    # checkpoints (fail before decoding anything expensive)
    lfg_model = checkpoints.load_model(opts["lfg"], "lfg").eval().to(dev)
    a2v_model, info = load_a2v(opts["a2v"], use_ema=opts.get("use_ema", True))
    a2v_model = a2v_model.to(dev)
    unet = a2v_model.unet
    if "window_size" in opts:
        unet.window_size = opts["window_size"]
    size = int(opts.get("size") or info.get("image_size") or 128)

    # inputs
    frame = load_image(image, size)
    wav = load_audio(audio, opts.get("max_seconds"))
    n_frames = n_video_frames(len(wav))
    dim = unet.cond_dim - POSE_DIM - BLINK_DIM
    if opts.get("audio_feat_from"):
        feat = np.load(opts["audio_feat_from"], allow_pickle=False).astype(np.float32)
        if feat.ndim != 2 or feat.shape[1] != dim or len(feat) < n_frames:
            raise ValueError(f"{opts['audio_feat_from']}: audio features must be (>= {n_frames}, {dim}), got {feat.shape}")
        feat = feat[:n_frames]
    else:
        feat = audio_features(wav, n_frames, info.get("audio_feature"), dim)
    request = GenerationRequest(frame, wav, feat, n_frames, seed)
    if pose_blink_source is None and (opts.get("pbnet_pose") or opts.get("pbnet_blink")):
        if not (opts.get("pbnet_pose") and opts.get("pbnet_blink")):
            raise ValueError("generate with PBNet needs both --pbnet-pose and --pbnet-blink checkpoints")
        init_pose = opts.get("init_pose") or info.get("ref_pose_mean")
        init_blink = opts.get("init_blink") or info.get("ref_blink_mean")
        if init_pose is None or init_blink is None:
            raise ValueError(f"{opts['a2v']}: records no mean reference pose/blink; give --init-pose and --init-blink")
        pose_blink_source = pose_blink_from_pbnet(opts["pbnet_pose"], opts["pbnet_blink"], init_pose, init_blink,
                                                  opts.get("pose_from"), opts.get("blink_from"), device=dev)
    source = pose_blink_source or pose_blink_from_files(opts.get("pose_from"), opts.get("blink_from"))
    motion = source(request)
    if motion.pose.shape != (n_frames, POSE_DIM) or motion.blink.shape != (n_frames, BLINK_DIM):
        raise ValueError(f"pose/blink source returned pose {motion.pose.shape} and blink {motion.blink.shape}, "
                         f"expected ({n_frames}, {POSE_DIM}) and ({n_frames}, {BLINK_DIM})")

    box = opts.get("face_box") or [v * size for v in (info.get("face_box_mean") or DEFAULT_FACE_BOX)]
    if len(box) != 4:
        raise ValueError(f"face_box must be x0,y0,x1,y1 pixels, got {box}")
    ref = torch.as_tensor(frame, device=dev).permute(2, 0, 1)[None].float() / 255
    video = animate(lfg_model, a2v_model, ref, box, feat, motion, seed=seed, steps=opts.get("steps"), eta=opts.get("eta"),
                    decode_chunk=int(opts.get("decode_chunk") or 32), progress=progress)
    frames = to_uint8_video(video)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encode_mp4(frames, audio=wav))
    return {"out": str(out), "frames": n_frames, "seconds": n_frames / FPS, "size": size, "seed": seed,
            "steps": opts.get("steps") or a2v_model.diffusion.sampling_timesteps, "window_size": unet.window_size,
            "ema": info["ema"], "device": str(dev), "face_box": [float(v) for v in box]}
