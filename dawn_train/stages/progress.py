"""`StepProgressBar`: the training bar counts optimizer steps against `trainer.max_steps`.

Schedules here are in optimizer steps and `max_epochs` is -1, so Lightning's bar (`Epoch 29/-2`, batches
of the epoch) says nothing about how far a run is.  With `max_steps` set the bar reads
`Epoch 29, step ━━━━ 1450/500000`; a run bounded by epochs keeps the epoch bar.  DawnCLI adds it unless
the config has its own progress bar or `trainer.enable_progress_bar: false`.
"""
from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    # Lightning's RichProgressBar keeps the train bar behind private helpers (`_update`, `_update_metrics`,
    # `_initialize_train_progress_bar_id`, `_get_train_description`); this subclass only changes what is counted.

    def _by_steps(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if self._by_steps():
            text = f"Epoch {current_epoch}, step"
        elif max_epochs is not None and max_epochs > 0:
            text = f"Epoch {current_epoch}/{max_epochs - 1}"
        else:
            text = f"Epoch {current_epoch}"
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": no flicker

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._by_steps():
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._by_steps():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:  # a resume starts mid-epoch
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
