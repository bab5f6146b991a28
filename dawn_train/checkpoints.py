"""The one place that knows checkpoint file formats: official DAWN files, our converted files,
and Lightning `.ckpt` files.

Official formats (all loaded with `torch.load(..., weights_only=True)`):
- LFG (`LFG_128_1000ep.pth`, ...): dict `generator` / `region_predictor` / `bg_predictor`, each a
  state dict (`optimizer`, `example`, `epoch` are ignored) -> our `LatentFlowGenerator` with the
  three sub-modules under the same names.
- A2V-FDM (`DAWN_128.pth`, ...): the `GaussianDiffusion` state dict under `diffusion` (UNet under
  `denoise_fn.`) -> our `A2VFDM.diffusion`; the never-saved face-location encoder is regenerated
  exactly as the official code initialises it (see `models/a2v/face_location.py`).
- PBNet pose / blink: raw `CVAE` state dicts -> our `PBNet`.

Our converted file: `{"dawn_train": {"format": 1, "kind": ...}, "state_dict": ..., "model": {class_path, init_args}}`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FORMAT_VERSION = 1
KINDS = ("lfg", "a2v", "pbnet-pose", "pbnet-blink")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def read(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True ({exc})") from exc


def default_model(kind: str) -> tuple[nn.Module, dict]:
    """The official release architecture of `kind` and its config ({class_path, init_args})."""
    if kind == "lfg":
        config = {"class_path": "dawn_train.models.lfg.LatentFlowGenerator", "init_args": {}}
    elif kind == "a2v":
        config = {"class_path": "dawn_train.models.a2v.build_a2v", "init_args": {}}
    elif kind in ("pbnet-pose", "pbnet-blink"):
        dims = {"pos_dim": 6, "eye_dim": 0} if kind == "pbnet-pose" else {"pos_dim": 0, "eye_dim": 2}
        config = {"class_path": "dawn_train.models.pbnet.PBNet", "init_args": dims}
    else:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")
    return build(config), config


def build(config: dict) -> nn.Module:
    """Instantiate {class_path, init_args} (a class or a factory function)."""
    import importlib

    module, _, name = config["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**config.get("init_args", {}))


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
        from dawn_train.models.a2v import official_face_loc_state_dict
        from dawn_train.models.lfg import LatentFlowGenerator

        with torch.device("meta"):  # the release LFG layout, for replaying the official init order
            lfg = LatentFlowGenerator()
        layouts = [{k: v.shape for k, v in getattr(lfg, g).state_dict().items()}
                   for g in ("generator", "region_predictor", "bg_predictor")]
        diffusion = raw["diffusion"]
        layouts.append({k[len("denoise_fn."):]: v.shape for k, v in diffusion.items() if k.startswith("denoise_fn.")})
        face = official_face_loc_state_dict(layouts)
        return {**{f"diffusion.{k}": v for k, v in diffusion.items()}, **{f"face_loc_emb.{k}": v for k, v in face.items()}}
    if kind in ("pbnet-pose", "pbnet-blink"):
        return dict(raw)
    raise CheckpointError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")


def detect_state_dict(raw: dict, kind: str, path: str | Path) -> dict:
    """State dict in our names from any supported file: ours, a Lightning .ckpt, or official."""
    if "dawn_train" in raw:
        if raw["dawn_train"].get("kind") != kind:
            raise CheckpointError(f"{path}: holds a '{raw['dawn_train'].get('kind')}' model, expected '{kind}'")
        return raw["state_dict"]
    if "state_dict" in raw and "pytorch-lightning_version" in raw:
        prefix = "model."
        return {k[len(prefix):]: v for k, v in raw["state_dict"].items() if k.startswith(prefix)}
    return official_state_dict(raw, kind, path)


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


def load_model_weights(model: nn.Module, path: str | Path, kind: str) -> nn.Module:
    """Load weights of `kind` from any supported file into `model`, strictly."""
    load_strict(model, detect_state_dict(read(path), kind, path), path)
    return model


def model_config(raw: dict, kind: str) -> dict:
    """The {class_path, init_args} a file was trained with (ours and Lightning .ckpt record it);
    official files imply the release architecture."""
    if "dawn_train" in raw:
        return raw["model"]
    config = raw.get("hyper_parameters", {}).get("model") if "pytorch-lightning_version" in raw else None
    if isinstance(config, dict) and "class_path" in config:
        return config
    return default_model(kind)[1]


def load_model(path: str | Path, kind: str) -> nn.Module:
    """Build the model a file describes and load its weights strictly."""
    raw = read(path)
    model = build(model_config(raw, kind))
    load_strict(model, detect_state_dict(raw, kind, path), path)
    return model


def save_converted(model: nn.Module, config: dict, kind: str, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"dawn_train": {"format": FORMAT_VERSION, "kind": kind}, "state_dict": model.state_dict(), "model": config}
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def convert_official(kind: str, path: str | Path, out: str | Path) -> dict:
    """Official file -> our converted file; returns a summary (parameter count, keys)."""
    model, config = default_model(kind)
    load_strict(model, official_state_dict(read(path), kind, path), path)
    save_converted(model, config, kind, out)
    return {"kind": kind, "source": str(path), "out": str(out), "tensors": len(model.state_dict()),
            "parameters": sum(p.numel() for p in model.parameters())}


def export_official(model: nn.Module, kind: str) -> dict:
    """Our model -> the official file layout (the inverse of `official_state_dict`)."""
    state = model.state_dict()
    if kind == "lfg":
        return {g: {k[len(g) + 1:]: v for k, v in state.items() if k.startswith(g + ".")}
                for g in ("generator", "region_predictor", "bg_predictor")}
    if kind == "a2v":
        return {"diffusion": {k[len("diffusion."):]: v for k, v in state.items() if k.startswith("diffusion.")}}
    return dict(state)
