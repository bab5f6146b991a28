"""Distributed strategies: DDP and DeepSpeed ZeRO-2/3, runnable on CPU for tests.

Lightning's `DeepSpeedStrategy` refuses anything but CUDA.  DeepSpeed itself runs on CPU (gloo
process group, its CPU accelerator), so `CPUCapableDeepSpeedStrategy` lifts exactly the three
CUDA-only steps when the accelerator is not CUDA, and is the parent class unchanged on CUDA:

- `setup_environment`: the CUDA check is skipped; the plain DDP environment set-up runs instead;
- `setup_distributed`: the CUDA device-index validation is skipped;
- `_setup_model_and_optimizer`: `deepspeed.initialize` gets the local rank as `device_rank`
  (a CPU device has no index).

Both strategies here also take `activation_checkpointing`: names of module classes whose forward
is recomputed in the backward pass (torch non-reentrant checkpointing, applied before the model is
wrapped).  State-dict names do not change, so checkpoints load with or without it.

The YAML presets in `experiments/strategies/` (`ddp`, `deepspeed_stage_2`) compose after any stage config and also
start the dataloader workers from a forkserver (`data.init_args.worker_start_method`);
`deepspeed_stage_3` and `deepspeed_stage_3_offload` are overlays given after `deepspeed_stage_2`.  `PRESETS`
says which suits which stage.
"""
from __future__ import annotations

import argparse
from typing import Optional

from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch import nn

# Which preset suits which stage (parameters from the official release; see README "Scaling out").
PRESETS = {
    "lfg": "ddp",                  # ~66 M parameters at 128 px: DDP fits; ZeRO-2 at 256 px with large batches
    "pbnet": "ddp",                # a few M parameters: DDP
    "a2v": "deepspeed_stage_2",    # ~50 M parameters but large activations (clips of 20-40 frames): ZeRO-2 + bf16
    "a2v-256": "deepspeed_stage_2",  # the memory is in activations, not the 50 M parameters; ZeRO-3 + EMA is refused
}
PRESET_FILES = ("ddp", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload")


def apply_activation_checkpointing(model: nn.Module, class_names: Optional[list[str]]) -> int:
    """Wrap every submodule whose class name (or dotted class path) is in `class_names` with
    non-reentrant activation checkpointing.  Returns how many were wrapped; an unknown name is an error."""
    if not class_names:
        return 0
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing as apply

    wanted = set(class_names)

    def match(module: nn.Module) -> bool:
        cls = type(module)
        return cls.__name__ in wanted or f"{cls.__module__}.{cls.__qualname__}" in wanted

    count = sum(1 for m in model.modules() if match(m))
    if count == 0:
        raise ValueError(f"activation_checkpointing: no submodule of {type(model).__name__} has a class in {sorted(wanted)}")
    apply(model, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
          check_fn=match)
    return count


class DawnDDPStrategy(DDPStrategy):
    """Lightning's DDPStrategy plus the `activation_checkpointing` switch (class names to recompute)."""

    def __init__(self, *args, activation_checkpointing: Optional[list[str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation_checkpointing = activation_checkpointing

    def setup(self, trainer) -> None:
        apply_activation_checkpointing(self.model, self.activation_checkpointing)
        super().setup(trainer)


class CPUCapableDeepSpeedStrategy(DeepSpeedStrategy):
    """`DeepSpeedStrategy` that also runs on CPU (gloo); identical to the parent on CUDA.

    Takes every argument of `DeepSpeedStrategy` (stage, offload_optimizer, offload_parameters,
    partition_activations, cpu_checkpointing, ...) plus `activation_checkpointing` (class names)."""

    strategy_name = "deepspeed_cpu_capable"

    def __init__(self, *args, activation_checkpointing: Optional[list[str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation_checkpointing = activation_checkpointing

    def _on_cuda(self) -> bool:
        return isinstance(self.accelerator, CUDAAccelerator)

    def setup_environment(self) -> None:
        if self._on_cuda():
            return super().setup_environment()
        DDPStrategy.setup_environment(self)  # calls self.setup_distributed()

    def setup_distributed(self) -> None:
        if self._on_cuda():
            return super().setup_distributed()
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def setup(self, trainer) -> None:
        apply_activation_checkpointing(self.model, self.activation_checkpointing)
        super().setup(trainer)

    def _auto_select_batch_size(self) -> int:
        # The parent reads `train_dataloader.batch_sampler.batch_size`, which our WebDataset loaders
        # (batched inside the pipeline) do not have: take the DataModule's per-device batch size.
        # Only used for DeepSpeed's throughput logging (train_micro_batch_size_per_gpu).
        datamodule = getattr(self.lightning_module.trainer, "datamodule", None)
        if isinstance(getattr(datamodule, "batch_size", None), int):
            return datamodule.batch_size
        try:
            return super()._auto_select_batch_size()
        except AttributeError:
            return 1

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        if self._on_cuda():
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=filter(lambda p: p.requires_grad, model.parameters()), optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False)
        return engine, ds_optimizer
