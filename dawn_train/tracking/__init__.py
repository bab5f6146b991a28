"""Experiment tracking: the only place that imports wandb or reads W&B environment variables."""
from dawn_train.tracking.logger import DawnCSVLogger, DawnWandbLogger
from dawn_train.tracking.media import image_grid, log_images, log_video
from dawn_train.tracking.offline import read_offline_run

__all__ = ["DawnCSVLogger", "DawnWandbLogger", "read_offline_run", "image_grid", "log_images", "log_video"]
