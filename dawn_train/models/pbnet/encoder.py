"""PBNet posterior encoder (official ``Encoder_TRANSFORMERREEMB5``); used in training only."""
from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from .positional_encoding import PositionalEncoding


class PBNetEncoder(nn.Module):
    """Per-frame posterior q(z_t | x, audio): one ``audio_latent_dim`` Gaussian per frame.

    Token of frame t = [firstpose(x_0) | pose(x_t - x_0) | audio(a_t)], width
    ``2 * pose_latent_dim + audio_latent_dim`` (384 at full size), + sinusoidal PE, then a post-norm
    ``nn.TransformerEncoder`` run sequence-first as in the official code (its fused ``in_proj`` keys
    and its non-fast-path numerics), with padded frames excluded as keys. Outputs at padded frames are
    not zeroed (official behaviour); losses should mask them.
    """

    def __init__(self, *, pos_dim: int = 6, eye_dim: int = 0, audio_dim: int = 1024, pose_latent_dim: int = 64,
                 audio_latent_dim: int = 256, ff_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                 dropout: float = 0.1, activation: str = "gelu", max_len: int = 20000) -> None:
        super().__init__()
        d_in = pos_dim + eye_dim
        d_model = audio_latent_dim + 2 * pose_latent_dim
        # registration order = official state-dict order
        self.mu_layer = nn.Linear(d_model, audio_latent_dim)
        self.sigma_layer = nn.Linear(d_model, audio_latent_dim)  # predicts log-variance
        self.poseEmbedding = nn.Linear(d_in, pose_latent_dim)
        self.firstposeEmbedding = nn.Linear(d_in, pose_latent_dim)
        self.audioEmbedding = nn.Linear(audio_dim, audio_latent_dim)
        self.sequence_pos_encoder = PositionalEncoding(d_model, dropout=dropout, max_len=max_len)
        layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=num_heads, dim_feedforward=ff_size,
                                           dropout=dropout, activation=activation)
        # nested tensors need batch_first; disabling them only silences torch's warning
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, audio: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) absolute sequence; audio: (B, T, A); mask: (B, T) bool, True = valid frame.
        Returns (mu, logvar), each (B, T, L)."""
        x_ref = x[:, :1]
        tokens = [
            repeat(self.firstposeEmbedding(x_ref), "b 1 c -> b t c", t=x.shape[1]),
            self.poseEmbedding(x - x_ref),
            self.audioEmbedding(audio),
        ]
        h = self.sequence_pos_encoder(torch.cat(tokens, dim=-1))
        h = self.seqTransEncoder(rearrange(h, "b t c -> t b c"), src_key_padding_mask=~mask)
        h = rearrange(h, "t b c -> b t c")
        return self.mu_layer(h), self.sigma_layer(h)

