"""Experiment tracking: the only place that imports wandb or reads W&B environment variables."""
from dawn_train.tracking.logger import DawnCSVLogger, DawnWandbLogger, log_eval_table, read_offline_run
from dawn_train.tracking.media import image_grid, log_images, log_video

__all__ = ["DawnCSVLogger", "DawnWandbLogger", "log_eval_table", "read_offline_run", "image_grid", "log_images", "log_video"]
