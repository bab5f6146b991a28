"""Training checkpoints -> files that evaluation and generation load without DeepSpeed.

`dawn-train export CKPT --kind lfg --out lfg.pt` reads
- a DeepSpeed checkpoint directory (`last.ckpt/` of a ZeRO-2/3 run: partitions are merged into
  fp32 weights with DeepSpeed's own `zero_to_fp32`, no GPU and no process group needed), or
- a plain Lightning `.ckpt` file,
and writes our converted format (`checkpoints.save_converted`: weights + the model's
{class_path, init_args}, so `checkpoints.load_model(out, kind)` rebuilds and loads it strictly),
or with `fmt="state_dict"` only the model's state dict.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dawn_train import checkpoints

# Wrappers that add a name component without adding parameters.
_WRAPPER_PARTS = ("_forward_module.", "_checkpoint_wrapped_module.")


def _strip(key: str) -> str:
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


def read_training_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(LightningModule state dict in fp32, hyper-parameters) of a DeepSpeed directory or a .ckpt file."""
    path = Path(path)
    if path.is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        if not (path / "latest").is_file():
            raise checkpoints.CheckpointError(f"{path}: not a DeepSpeed checkpoint directory (no 'latest' file)")
        tag = (path / "latest").read_text().strip()
        states = sorted((path / tag).glob("*model_states.pt"))
        if not states:
            raise checkpoints.CheckpointError(f"{path / tag}: no *model_states.pt file")
        # Our own training output: Lightning's client state (loops, hyper-parameters) needs full unpickling.
        client = torch.load(states[0], map_location="cpu", weights_only=False)
        state_dict = get_fp32_state_dict_from_zero_checkpoint(str(path), tag)
    else:
        client = checkpoints.read(path)
        if "pytorch-lightning_version" not in client:
            raise checkpoints.CheckpointError(f"{path}: not a Lightning checkpoint (use convert-official for official files)")
        state_dict = client["state_dict"]
    return {_strip(k): v.float() if v.is_floating_point() else v for k, v in state_dict.items()}, \
        dict(client.get("hyper_parameters", {}))


def export_checkpoint(ckpt: str | Path, kind: str, out: str | Path, fmt: str = "converted",
                      prefix: str = "model.") -> dict:
    """Write the stage's model (state-dict keys under `prefix`) of `ckpt` to `out`; returns a summary."""
    if kind not in checkpoints.KINDS:
        raise checkpoints.CheckpointError(f"unknown kind {kind!r}; expected one of {checkpoints.KINDS}")
    if fmt not in ("converted", "state_dict"):
        raise ValueError(f"export format must be 'converted' or 'state_dict', got {fmt!r}")
    state_dict, hparams = read_training_checkpoint(ckpt)
    model_state = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not model_state:
        raise checkpoints.CheckpointError(f"{ckpt}: no weights under '{prefix}' (keys start with "
                                          f"{sorted({k.split('.')[0] for k in state_dict})})")
    config = hparams.get("model")
    if not (isinstance(config, dict) and "class_path" in config):
        raise checkpoints.CheckpointError(f"{ckpt}: hyper-parameters do not record the model's class_path/init_args")
    model = checkpoints.build(dict(config))
    checkpoints.load_strict(model, model_state, ckpt)
    out = Path(out)
    if fmt == "converted":
        checkpoints.save_converted(model, dict(config), kind, out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out)
    return {"source": str(ckpt), "out": str(out), "kind": kind, "format": fmt, "tensors": len(model_state),
            "parameters": sum(p.numel() for p in model.parameters()),
            "deepspeed": Path(ckpt).is_dir()}
