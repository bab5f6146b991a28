"""PBNet: the pose / blink CVAE of DAWN (released architecture ``transformerreemb5``).

One class serves both released models: pose (``pos_dim=6, eye_dim=0``) and blink
(``pos_dim=0, eye_dim=2``). ``encoder``/``decoder`` follow the official module tree, so a released
raw ``CVAE.state_dict()`` loads with ``strict=True`` and no renaming.

Public tensors are batch-first: x (B, T, D), audio (B, T, A), mask (B, T) bool (True = valid frame),
per-frame latents (B, T, L) with L = ``audio_latent_dim``. The model works on deltas w.r.t. frame 0:
``decode``/``forward`` return deltas, ``generate`` returns absolute sequences (x0 + delta).
Pose is expected min-max normalised (see ``normalization.py``); blink ratios are used raw.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from .decoder import PBNetDecoder
from .encoder import PBNetEncoder


def exists(x) -> bool:
    return x is not None


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """lengths: (B,) int -> (B, max_len) bool with ``mask[b, t] = t < lengths[b]``."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class PBNet(nn.Module):
    """Pose/blink CVAE with one ``audio_latent_dim`` latent per frame.

    Defaults are the released model (audio 1024 HuBERT features, pose latent 64, audio latent 256,
    feed-forward 128, 2 layers, 4 heads of width 32, RoPE on 4 dims, 128 buckets / distance 128,
    +-200-frame window in eval mode). ``rotary_dim=None`` reproduces the official
    ``min(32, num_heads)``; ``eval_window=None`` disables the window; ``mask_padded_keys=True``
    (off in the official code) keeps padded frames out of the decoder's attention.
    """

    def __init__(self, *, pos_dim: int = 6, eye_dim: int = 0, audio_dim: int = 1024, pose_latent_dim: int = 64,
                 audio_latent_dim: int = 256, ff_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                 dim_head: int = 32, rotary_dim: int | None = None, dropout: float = 0.1,
                 activation: str = "gelu", num_buckets: int = 128, max_distance: int = 128,
                 eval_window: int | None = 200, max_len: int = 20000, mask_padded_keys: bool = False) -> None:
        super().__init__()
        if pos_dim + eye_dim < 1:
            raise ValueError(f"pos_dim + eye_dim must be >= 1, got {pos_dim} + {eye_dim}")
        self.pos_dim, self.eye_dim, self.audio_dim = pos_dim, eye_dim, audio_dim
        self.audio_latent_dim = audio_latent_dim
        shared = dict(pos_dim=pos_dim, eye_dim=eye_dim, audio_dim=audio_dim, pose_latent_dim=pose_latent_dim,
                      audio_latent_dim=audio_latent_dim, ff_size=ff_size, num_layers=num_layers,
                      num_heads=num_heads, dropout=dropout, activation=activation, max_len=max_len)
        self.encoder = PBNetEncoder(**shared)
        self.decoder = PBNetDecoder(**shared, dim_head=dim_head, rotary_dim=rotary_dim, num_buckets=num_buckets,
                                    max_distance=max_distance, eval_window=eval_window,
                                    mask_padded_keys=mask_padded_keys)

    @property
    def latent_dim(self) -> int:
        """Per-frame latent size (official ``CAE.latent_dim`` = ``audio_latent_dim``)."""
        return self.audio_latent_dim

    @property
    def feature_dim(self) -> int:
        """D = pos_dim + eye_dim."""
        return self.pos_dim + self.eye_dim

    @staticmethod
    def _mask(mask: Tensor | None, lengths: Tensor | None, ref: Tensor) -> Tensor:
        """(B, T) bool from ``mask``, else ``lengths``, else all frames of ``ref`` (B, T, ...) valid."""
        b, t = ref.shape[:2]
        if exists(mask):
            return mask.to(device=ref.device, dtype=torch.bool)
        if exists(lengths):
            return lengths_to_mask(torch.as_tensor(lengths, device=ref.device), t)
        return torch.ones(b, t, dtype=torch.bool, device=ref.device)

    def encode(self, x: Tensor, audio: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) absolute; audio: (B, T, A); mask: (B, T). Returns (mu, logvar), each (B, T, L);
        values at padded frames are not meaningful."""
        return self.encoder(x, audio, self._mask(mask, None, x))

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, *, eps: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) unless given (same shape as mu)."""
        if not exists(eps):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return eps * torch.exp(logvar / 2) + mu

    def decode(self, x0: Tensor, z: Tensor, audio: Tensor, mask: Tensor | None = None) -> Tensor:
        """x0: (B, 1, D), (B, D) or a full (B, T', D) sequence (only frame 0 is used); z: (B, T, L);
        audio: (B, T, A); mask: (B, T). Returns the delta w.r.t. x0, (B, T, D), 0 on padded frames."""
        x0 = rearrange(x0, "b d -> b 1 d") if x0.ndim == 2 else x0
        return self.decoder(x0, z, audio, self._mask(mask, None, audio))

    def forward(self, x: Tensor, audio: Tensor, mask: Tensor | None = None, *, eps: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training pass (posterior sample). x: (B, T, D) absolute; audio: (B, T, A); mask: (B, T).
        Returns ``mu``, ``logvar``, ``z`` (B, T, L); ``output`` (B, T, D) predicted delta (0 on padded
        frames); ``x_delta`` (B, T, D) = x - x[:, :1], the reconstruction target."""
        mask = self._mask(mask, None, x)
        mu, logvar = self.encoder(x, audio, mask)
        z = self.reparameterize(mu, logvar, eps=eps, generator=generator)
        output = self.decoder(x[:, :1], z, audio, mask)
        return dict(mu=mu, logvar=logvar, z=z, output=output, x_delta=x - x[:, :1])

    def sample_latent(self, batch: int, frames: int, *, generator: torch.Generator | None = None,
                      device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """(B, T, L) standard-normal prior sample, drawn in the official (T, B, L) order so that
        a seed gives the same z as the official ``CAE.generate``."""
        z = torch.randn(frames, batch, self.latent_dim, generator=generator, device=device, dtype=dtype)
        return rearrange(z, "t b l -> b t l")

    @torch.no_grad()
    def generate(self, x0: Tensor, audio: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None, *,
                 z: Tensor | None = None, generator: torch.Generator | None = None, seed: int | None = None,
                 fact: float = 1.0) -> Tensor:
        """Sample a sequence driven by audio (prior z, decoder only, one non-autoregressive pass).

        x0: (B, 1, D) or (B, D) first frame; audio: (B, T, A) (T sets the length, any T up to max_len);
        lengths (B,) or mask (B, T) mark valid frames (default: all); z: (B, T, L) to fix the latent,
        else one z per frame is drawn from N(0, I) (with ``generator``, or a fresh one seeded by ``seed``)
        and scaled by ``fact`` (official name). Returns the ABSOLUTE sequence x0 + delta, (B, T, D),
        with padded frames set to 0. Call ``eval()`` first for the official behaviour (no dropout,
        +-200-frame window).
        """
        x0 = rearrange(x0, "b d -> b 1 d") if x0.ndim == 2 else x0[:, :1]
        mask = self._mask(mask, lengths, audio)
        if not exists(z):
            if exists(seed):
                generator = torch.Generator(device=audio.device).manual_seed(seed)
            b, t = mask.shape
            z = fact * self.sample_latent(b, t, generator=generator, device=audio.device, dtype=audio.dtype)
        delta = self.decoder(x0, z, audio, mask)
        return (delta + x0).masked_fill(~mask[..., None], 0.0)
