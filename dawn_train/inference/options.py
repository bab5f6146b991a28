"""What `dawn-train generate` can be told (:class:`GenerateOptions`: flags, YAML keys and keywords, one spelling)
and the sampling-window choices (`window_arg`).  Standard library only: building the command line imports this and
not the models, so `dawn-train --help` and every command start without loading torch or Lightning."""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Sampling-window choices besides a frame count: keep the checkpoint's, or full attention (YAML null).
CHECKPOINT_WINDOW = "checkpoint"
FULL_ATTENTION = ("none", "null", "full")


def window_arg(text: str) -> int | str:
    """A `--window-size` value: frames (paper count), `none` (full attention; also `null`, `full`) or
    `checkpoint` (the checkpoint's own).  An argparse `type`."""
    word = str(text).strip().lower()
    if word in FULL_ATTENTION:
        return "none"
    if word == CHECKPOINT_WINDOW:
        return CHECKPOINT_WINDOW
    try:
        frames = int(word)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window size must be a number of frames, 'none' (full attention) or "
                                         f"'{CHECKPOINT_WINDOW}', got {text!r}") from None
    if frames < 0:
        raise argparse.ArgumentTypeError(f"window size must be >= 0 frames, got {frames}")
    return frames


def bounded(low: float, kind: type = int, strict: bool = False):
    """An argparse `type`: a number (`kind`) >= `low` (> `low` when `strict`)."""
    def parse(text) -> int | float:
        if isinstance(text, bool):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        try:
            value = kind(text)
            # a YAML 2.7 for a count is refused, not cut to 2; nan and inf are not sizes or durations
            if (kind is int and float(text) != value) or not math.isfinite(value):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a finite number'}, "
                                             f"got {text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {value}")
        return value
    parse.__name__ = kind.__name__  # argparse's "invalid <name> value" messages
    return parse


positive_int = bounded(1)
non_negative_int = bounded(0)
positive_float = bounded(0, float, strict=True)
non_negative_float = bounded(0, float)


def _opt(default=None, help: str = "", nargs: Optional[int] = None, **extra):
    return field(default=default, metadata={"help": help, "nargs": nargs, **extra})


@dataclass
class GenerateOptions:
    """Everything `generate` can be told besides the image, the audio and the output path."""

    lfg: Optional[str] = _opt(help="LFG checkpoint (.ckpt, DeepSpeed dir, exported/converted or official .pth)")
    a2v: Optional[str] = _opt(help="A2V-FDM checkpoint (EMA weights used when present)")
    pbnet_pose: Optional[str] = _opt(help="PBNet pose checkpoint: samples head motion from the audio (--seed "
                                     "varies it)")
    pbnet_blink: Optional[str] = _opt(help="PBNet blink checkpoint: samples blinks from the audio")
    pose_from: Optional[str] = _opt(help="(frames, 6) .npy pose sequence (e.g. another video's: cross-identity "
                                    "reenactment); default: PBNet if given, else held at the reference pose")
    blink_from: Optional[str] = _opt(help="(frames, 2) .npy blink sequence; default: PBNet if given, else held")
    init_pose: Optional[list[float]] = _opt(help="reference image's pose (yaw pitch roll scale tx ty); default: "
                                            "the mean reference pose of the A2V training data", nargs=6)
    init_blink: Optional[list[float]] = _opt(help="reference image's eye openness (left right)", nargs=2)
    audio_feat_from: Optional[str] = _opt(help="precomputed (frames, D) audio features .npy (e.g. HuBERT)")
    features: Optional[str] = _opt(help="audio feature to compute: logmel or hubert (default: the one the A2V "
                                   "checkpoint records; one that records none, e.g. an official file, takes 1024-d HuBERT)")
    hubert_dir: Optional[str] = _opt(help="local HuBERT model directory for HuBERT checkpoints, e.g. a copy of "
                                     "facebook/hubert-large-ls960-ft (runs on the generation's device)")
    seed: int = _opt(0, help="seeds the diffusion noise and the PBNet latents")
    window_size: Optional[int | str] = _opt(CHECKPOINT_WINDOW, type=window_arg,
                                            help="sampling window in frames (paper count: 80 = +-40), 'none' = full "
                                            "attention (YAML null), default: the checkpoint's")
    steps: Optional[int] = _opt(help="DDIM steps (default: the checkpoint's, 20)", type=positive_int)
    eta: Optional[float] = _opt(help="DDIM eta (default: the checkpoint's)", type=non_negative_float)
    guidance: float = _opt(1.0, help="classifier-free guidance scale (1 = none, the release's sampling; above 1 the "
                           "video follows audio, pose and blink more strongly, at two UNet calls per step)",
                           type=positive_float)
    size: Optional[int] = _opt(help="frame size R (default: the checkpoint's)", type=positive_int)
    face_box: Optional[list[float]] = _opt(help="face box x0 y0 x1 y1 in pixels of the R x R image (default: the "
                                           "training data's mean box)", nargs=4)
    device: Optional[str] = _opt(help="cpu, cuda, ... (default: cuda if available)")
    decode_chunk: int = _opt(32, help="frames per LFG decode call (memory bound)", type=positive_int)
    max_seconds: Optional[float] = _opt(help="use only the first seconds of the audio", type=positive_float)
    chunk_seconds: Optional[float] = _opt(help="generate the motion in windows of S seconds (each one "
                                          "non-autoregressive DDIM run, same reference), cross-faded over "
                                          "--chunk-overlap: memory of one window whatever the length, at the price of "
                                          "seams and less global consistency than one pass (default: one pass)",
                                          type=positive_float)
    chunk_overlap: float = _opt(2.0, help="seconds shared by consecutive --chunk-seconds windows, cross-faded in "
                                "latent-flow space (at most half a window)", type=non_negative_float)
    memory_budget: Optional[float] = _opt(help="GiB the generation may use (default: what the device has available); "
                                          "a generation estimated above it is refused before any work",
                                          type=positive_float)
    pbnet_banded: bool = _opt(True, help="PBNet attends in bands beyond its +-200-frame window (O(T x window) "
                              "memory); --no-pbnet-banded builds the official dense T x T bias (O(T^2), comparisons)")
    use_ema: bool = _opt(True, help="sample with the EMA weights when the checkpoint has them")
    crop: bool = _opt(True, help="detect the face and crop it as `data prep` does (needs the prep extra); --no-crop uses "
                      "the image whole, resized to R x R (a ready face crop, as the official pipeline)")
    face_index: Optional[int] = _opt(help="which face of a photo with several (0 = the largest)", type=non_negative_int)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_yaml(cls, path: str | Path) -> dict:
        """The options a YAML file sets (unknown keys are an error naming the file)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such generate config file")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a generate config is a mapping of option: value")
        from dawn_train.stages.config_errors import ConfigError  # a usage error (exit 2), as in a `fit` config

        unknown = sorted(set(data) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; valid: {list(cls.names())}")
        return cls.checked(data, lambda name, why: ConfigError(f"{path}: {name}: {why}"))  # as the flags are

    @classmethod
    def resolve(cls, config: Optional[str | Path] = None, **given) -> "GenerateOptions":
        """Defaults, then the YAML `config`, then `given` (None values mean "not given")."""
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown generate option(s) {unknown}; valid: {list(cls.names())}")
        given = cls.checked({k: v for k, v in given.items() if v is not None},  # Python keywords, as the flags are
                            lambda name, why: ValueError(f"generate option {name}: {why}"))
        return cls(**{**(cls.from_yaml(config) if config else {}), **given})

    @classmethod
    def checked(cls, values: dict, error) -> dict:
        """`values` (name: value, None = not given) through the argparse `type` of their fields; a refused value
        raises `error(name, why)`."""
        values = dict(values)
        for f in dataclasses.fields(cls):
            check = f.metadata.get("type")
            if check is not None and values.get(f.name) is not None:
                try:
                    values[f.name] = check(values[f.name])
                except argparse.ArgumentTypeError as exc:
                    raise error(f.name, exc) from None
        return values

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field (`--pbnet-pose`, ...); flags not given stay out of the namespace."""
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind = f.metadata.get("type") or _scalar_type(f.type)
            if kind is bool:
                parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                    help=f.metadata["help"])
            else:
                parser.add_argument(flag, dest=f.name, type=kind, nargs=f.metadata["nargs"], default=argparse.SUPPRESS,
                                    help=f.metadata["help"])

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, config: Optional[str | Path] = None) -> "GenerateOptions":
        return cls.resolve(config, **{name: getattr(args, name) for name in cls.names() if hasattr(args, name)})


def _scalar_type(annotation) -> type:
    text = str(annotation)
    for name, kind in (("bool", bool), ("float", float), ("int", int)):
        if name in text:
            return kind
    return str
