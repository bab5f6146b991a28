"""The one place that knows what a checkpoint holds and how each format lays it out.

Formats read by :func:`open_checkpoint` (which returns a :class:`Checkpoint`):
- `lightning`: a Lightning `.ckpt` file of one of our stages (`state_dict` with the model under
  `model.`, the EMA copy under `ema.model.`, `hyper_parameters` with the model's {class_path,
  init_args}, and a stage record such as `dawn_a2v`).
- `deepspeed`: a DeepSpeed checkpoint directory (`last.ckpt/` of a ZeRO-2/3 run): partitions are
  merged into fp32 weights with DeepSpeed's own `zero_to_fp32` (no GPU, no process group); Lightning's
  client state (hyper-parameters, stage records) comes from the first `*model_states.pt`.
- `converted`: our own file, `{"dawn_train": {"format", "kind"}, "state_dict", "model": {class_path,
  init_args}}` plus, since format 2, optional `ema_state_dict` and `metadata` (the stage record).
- `official`: DAWN release files (all read with `weights_only=True`):
  LFG (`LFG_128_1000ep.pth`): dict `generator` / `region_predictor` / `bg_predictor`;
  A2V-FDM (`DAWN_128.pth`): the `GaussianDiffusion` state dict under `diffusion` (the never-saved
  face-location encoder is regenerated exactly as the official code initialises it);
  PBNet pose / blink: raw `CVAE` state dicts.

Kinds: `lfg`, `a2v`, `pbnet-pose`, `pbnet-blink`.  A file that records another kind than the one asked
for is refused with a message naming both (a PBNet checkpoint given as `--a2v`, say).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from dawn_train.models.a2v import official_face_loc_state_dict
from dawn_train.models.lfg import LatentFlowGenerator

FORMAT_VERSION = 2
KINDS = ("lfg", "a2v", "pbnet-pose", "pbnet-blink")
MODEL_PREFIX = "model."  # where a stage keeps its model in a Lightning state dict
EMA_PREFIX = "ema.model."  # where A2VStage keeps the EMA copy
STAGE_RECORDS = ("dawn_a2v",)  # stage records kept by `export` (metadata)
# the model's class (or factory) name -> kind, to tell kinds apart in Lightning checkpoints
_KIND_OF_CLASS = {"LatentFlowGenerator": "lfg", "build_a2v": "a2v", "A2VFDM": "a2v", "PBNet": "pbnet"}
# Wrappers that add a name component without adding parameters (DeepSpeed, activation checkpointing).
_WRAPPER_PARTS = ("_forward_module.", "_checkpoint_wrapped_module.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    """What one checkpoint holds, in our names.

    state_dict: the model's weights (keys of the model itself, no stage prefix); ema_state_dict: the EMA
    copy when there is one; model_config: {class_path, init_args} to rebuild the model; hparams: the
    stage's hyper-parameters (Lightning formats); metadata: stage records (`dawn_a2v`: image size, audio
    feature, mean reference face box / pose / blink)."""

    path: Path
    format: str
    kind: str
    state_dict: dict
    model_config: dict
    ema_state_dict: Optional[dict] = None
    hparams: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    global_step: Optional[int] = None  # training checkpoints: the optimizer step it was written at

    def weights(self, use_ema: bool = False) -> dict:
        """The EMA weights when asked for and present, else the raw weights."""
        return self.ema_state_dict if use_ema and self.ema_state_dict is not None else self.state_dict

    def build(self, use_ema: bool = False) -> nn.Module:
        """The model this checkpoint describes, its weights loaded strictly."""
        model = build(self.model_config)
        load_strict(model, self.weights(use_ema), self.path)
        return model


# ---- reading --------------------------------------------------------------------------------------
def read(path: str | Path) -> dict:
    """The raw content of a checkpoint file (`weights_only=True`; safetensors too)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; only DeepSpeed checkpoint directories are read "
                              "(use open_checkpoint)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True ({exc})") from exc


def _read_deepspeed(path: Path) -> dict:
    """A DeepSpeed directory -> a Lightning-like dict (fp32 `state_dict` + client state)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not (path / "latest").is_file():
        raise CheckpointError(f"{path}: a directory but not a DeepSpeed checkpoint (no 'latest' file)")
    tag = (path / "latest").read_text().strip()
    states = sorted((path / tag).glob("*model_states.pt"))
    if not states:
        raise CheckpointError(f"{path / tag}: no *model_states.pt file")
    # our own training output: Lightning's client state (loops, hyper-parameters) needs full unpickling
    client = torch.load(states[0], map_location="cpu", weights_only=False)
    merged = get_fp32_state_dict_from_zero_checkpoint(str(path), tag)
    client.pop("module", None)
    client["state_dict"] = merged
    client.setdefault("pytorch-lightning_version", "deepspeed")
    return client


def _strip(key: str) -> str:
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


def _under(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_kind(path: Path, recorded: Optional[str], kind: str) -> None:
    if recorded is None or recorded == kind or (recorded == "pbnet" and kind.startswith("pbnet")):
        return
    raise CheckpointError(f"{path}: holds a '{recorded}' checkpoint, expected '{kind}' (check which file goes "
                          "to which option)")


def _lightning_kind(raw: dict) -> Optional[str]:
    hp = raw.get("hyper_parameters") or {}
    if "target" in hp:
        return f"pbnet-{hp['target']}"
    if "dawn_a2v" in raw:
        return "a2v"
    config = hp.get("model")
    name = str(config.get("class_path", "")).rpartition(".")[2] if isinstance(config, dict) else ""
    return _KIND_OF_CLASS.get(name)


def open_checkpoint(path: str | Path, kind: str) -> Checkpoint:
    """Read any supported checkpoint of `kind` (see the module docstring) into a :class:`Checkpoint`."""
    if kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")
    path = Path(path)
    if path.is_dir():
        raw, fmt = _read_deepspeed(path), "deepspeed"
    else:
        raw = read(path)
        fmt = ("converted" if "dawn_train" in raw else
               "lightning" if "state_dict" in raw and "pytorch-lightning_version" in raw else "official")
    if fmt == "converted":
        _check_kind(path, raw["dawn_train"].get("kind"), kind)
        return Checkpoint(path, fmt, kind, raw["state_dict"], raw["model"], raw.get("ema_state_dict"),
                          dict(raw.get("hparams") or {}), dict(raw.get("metadata") or {}))
    if fmt in ("lightning", "deepspeed"):
        _check_kind(path, _lightning_kind(raw), kind)
        state = {_strip(k): v for k, v in raw["state_dict"].items()}
        if fmt == "deepspeed":  # zero_to_fp32 already gives fp32; keep integer buffers as they are
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        weights = _under(state, MODEL_PREFIX)
        if not weights:
            raise CheckpointError(f"{path}: no weights under '{MODEL_PREFIX}' (keys start with "
                                  f"{sorted({k.split('.')[0] for k in state})})")
        hparams = dict(raw.get("hyper_parameters") or {})
        config = hparams.get("model")
        if not (isinstance(config, dict) and "class_path" in config):
            config = default_config(kind)
        metadata = {name: raw[name] for name in STAGE_RECORDS if name in raw}
        step = raw.get("global_step")
        return Checkpoint(path, fmt, kind, weights, dict(config), _under(state, EMA_PREFIX) or None, hparams, metadata,
                          int(step) if step is not None else None)
    return Checkpoint(path, fmt, kind, official_state_dict(raw, kind, path), default_config(kind))


def load_model(path: str | Path, kind: str, use_ema: bool = False) -> nn.Module:
    """Build the model a checkpoint describes and load its weights strictly (EMA weights if asked
    for and present)."""
    return open_checkpoint(path, kind).build(use_ema)


def load_model_weights(model: nn.Module, path: str | Path, kind: str) -> nn.Module:
    """Load the weights of `kind` from any supported checkpoint into `model`, strictly."""
    load_strict(model, open_checkpoint(path, kind).state_dict, path)
    return model


# ---- models ---------------------------------------------------------------------------------------
def default_config(kind: str) -> dict:
    """{class_path, init_args} of the official release architecture of `kind`."""
    if kind == "lfg":
        return {"class_path": "dawn_train.models.lfg.LatentFlowGenerator", "init_args": {}}
    if kind == "a2v":
        return {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": {}}
    if kind in ("pbnet-pose", "pbnet-blink"):
        dims = {"pos_dim": 6, "eye_dim": 0} if kind == "pbnet-pose" else {"pos_dim": 0, "eye_dim": 2}
        return {"class_path": "dawn_train.models.pbnet.PBNet", "init_args": dims}
    raise CheckpointError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")


def build(config: dict) -> nn.Module:
    """Instantiate {class_path, init_args} (a class or a factory function)."""
    module, _, name = config["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**config.get("init_args", {}))


def load_strict(model: nn.Module, state_dict: dict, path: str | Path) -> None:
    """load_state_dict(strict=True) with an error that lists what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                        for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or mismatched:
        def show(items):
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")
        raise CheckpointError(f"{path}: does not fit {type(model).__name__}: {len(missing)} missing [{show(missing)}], "
                              f"{len(unexpected)} unexpected [{show(unexpected)}], {len(mismatched)} mismatched "
                              f"[{show(mismatched)}]")
    model.load_state_dict(state_dict, strict=True)


# ---- official files -------------------------------------------------------------------------------
def official_state_dict(raw: dict, kind: str, path: str | Path = "<file>") -> dict:
    """Map an official file's content to our module's state-dict names (explicit, no guessing)."""
    if kind == "lfg":
        groups = ("generator", "region_predictor", "bg_predictor")
        missing = [g for g in groups if g not in raw]
        if missing:
            raise CheckpointError(f"{path}: not an official LFG checkpoint (missing top-level keys {missing})")
        return {f"{g}.{k}": v for g in groups for k, v in raw[g].items()}
    if kind == "a2v":
        if "diffusion" not in raw:
            raise CheckpointError(f"{path}: not an official DAWN A2V checkpoint (no top-level 'diffusion' key)")
        return _official_a2v(raw["diffusion"])
    if kind in ("pbnet-pose", "pbnet-blink"):
        if not any(k.startswith(("encoder.", "decoder.")) for k in raw):
            raise CheckpointError(f"{path}: not an official PBNet checkpoint (no encoder./decoder. weights)")
        return dict(raw)
    raise CheckpointError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")


def _official_a2v(diffusion: dict) -> dict:
    with torch.device("meta"):  # the release LFG layout, for replaying the official init order
        lfg = LatentFlowGenerator()
    layouts = [{k: v.shape for k, v in getattr(lfg, g).state_dict().items()}
               for g in ("generator", "region_predictor", "bg_predictor")]
    layouts.append({k[len("denoise_fn."):]: v.shape for k, v in diffusion.items() if k.startswith("denoise_fn.")})
    face = official_face_loc_state_dict(layouts)
    return {**{f"diffusion.{k}": v for k, v in diffusion.items()}, **{f"face_loc_emb.{k}": v for k, v in face.items()}}


def export_official(model: nn.Module, kind: str) -> dict:
    """Our model -> the official file layout (the inverse of `official_state_dict`)."""
    state = model.state_dict()
    if kind == "lfg":
        return {g: _under(state, g + ".") for g in ("generator", "region_predictor", "bg_predictor")}
    if kind == "a2v":
        return {"diffusion": _under(state, "diffusion.")}
    return dict(state)


# ---- writing --------------------------------------------------------------------------------------
def save_converted(model: nn.Module, config: dict, kind: str, out: str | Path, *, ema_state_dict: Optional[dict] = None,
                   metadata: Optional[dict] = None, hparams: Optional[dict] = None) -> Path:
    """Our converted file: weights + {class_path, init_args} (+ EMA weights, stage records, stage
    hyper-parameters), written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"dawn_train": {"format": FORMAT_VERSION, "kind": kind}, "state_dict": model.state_dict(), "model": config}
    if ema_state_dict is not None:
        payload["ema_state_dict"] = ema_state_dict
    if metadata:
        payload["metadata"] = metadata
    if hparams:
        payload["hparams"] = _plain(hparams)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def _plain(value):
    """Hyper-parameters as plain containers (loadable with weights_only=True)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def convert_official(kind: str, path: str | Path, out: str | Path) -> dict:
    """Official file -> our converted file; returns a summary (parameter count, keys)."""
    config = default_config(kind)
    model = build(config)
    load_strict(model, official_state_dict(read(path), kind, path), path)
    save_converted(model, config, kind, out)
    return {"kind": kind, "source": str(path), "out": str(out), "tensors": len(model.state_dict()),
            "parameters": sum(p.numel() for p in model.parameters())}


def export(ckpt: str | Path, kind: str, out: str | Path, fmt: str = "converted") -> dict:
    """A training checkpoint (DeepSpeed directory or Lightning .ckpt) -> a file that evaluation and
    generation load without DeepSpeed: our converted format keeps the EMA weights, the stage records
    and hyper-parameters; `fmt="state_dict"` writes the model's raw state dict only."""
    if fmt not in ("converted", "state_dict"):
        raise ValueError(f"export format must be 'converted' or 'state_dict', got {fmt!r}")
    checkpoint = open_checkpoint(ckpt, kind)
    if checkpoint.format not in ("lightning", "deepspeed"):
        raise CheckpointError(f"{ckpt}: not a training checkpoint ({checkpoint.format} file; use convert-official "
                              "for official files)")
    model = checkpoint.build()
    out = Path(out)
    if fmt == "converted":
        save_converted(model, checkpoint.model_config, kind, out, ema_state_dict=checkpoint.ema_state_dict,
                       metadata=checkpoint.metadata, hparams=checkpoint.hparams)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out)
    return {"source": str(ckpt), "out": str(out), "kind": kind, "format": fmt, "tensors": len(checkpoint.state_dict),
            "parameters": sum(p.numel() for p in model.parameters()), "deepspeed": checkpoint.format == "deepspeed",
            "ema": checkpoint.ema_state_dict is not None and fmt == "converted",
            "metadata": sorted(checkpoint.metadata)}
