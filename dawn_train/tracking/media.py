"""Pictures people look at: image grids and videos, logged to W&B (and returned as arrays)."""
from __future__ import annotations

import numpy as np
import torch


def to_uint8_video(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> uint8 (T, H, W, 3)."""
    return (video.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def image_grid(rows: list[torch.Tensor], max_items: int = 4) -> np.ndarray:
    """Rows of (B, 3, H, W) images in [0, 1] -> one uint8 (H * rows, W * items, 3) grid."""
    lines = []
    for row in rows:
        row = row[:max_items].detach().float().clamp(0, 1).cpu()
        lines.append(torch.cat(list(row), dim=-1))  # (3, H, W * items)
    grid = torch.cat(lines, dim=-2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _experiment(logger):
    from lightning.pytorch.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) else None


def log_images(loggers, key: str, grid: np.ndarray, step: int, caption: str | None = None) -> None:
    import wandb

    for logger in loggers:
        run = _experiment(logger)
        if run is not None:
            run.log({key: wandb.Image(grid, caption=caption), "trainer/global_step": step})


def log_video(loggers, key: str, frames: np.ndarray, step: int, fps: int = 25, mp4: bytes | None = None) -> None:
    """frames: uint8 (T, H, W, 3). If the mp4 (with audio) is given, it is logged as the video."""
    import tempfile

    import wandb

    for logger in loggers:
        run = _experiment(logger)
        if run is None:
            continue
        if mp4 is not None:
            with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as handle:
                handle.write(mp4)
            video = wandb.Video(handle.name, format="mp4")
        else:
            video = wandb.Video(np.moveaxis(frames, -1, 1), fps=fps, format="mp4")
        run.log({key: video, "trainer/global_step": step})


def flow_to_rgb(flow: torch.Tensor) -> torch.Tensor:
    """Colour-wheel picture of an LFG flow. flow: (B, h, w, 2) absolute sampling grid in [-1, 1]
    -> (B, 3, h, w) in [0, 1]: hue = direction of the displacement from the identity grid,
    brightness = its magnitude (saturating at 0.25 of the image width)."""
    b, h, w, _ = flow.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=flow.device), torch.linspace(-1, 1, w, device=flow.device),
                            indexing="ij")
    disp = flow.float() - torch.stack([xs, ys], -1)
    angle = (torch.atan2(disp[..., 1], disp[..., 0]) / (2 * torch.pi)) % 1.0
    value = (disp.norm(dim=-1) / 0.25).clamp(0, 1)
    k = (angle[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0], device=flow.device)[None, :, None, None]) % 6
    rgb = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)  # HSV -> RGB with full saturation
    return rgb * value[:, None]
