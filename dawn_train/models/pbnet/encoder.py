"""PBNet posterior encoder (official ``Encoder_TRANSFORMERREEMB5``); used in training only."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from .dropout import Dropout, dropout, dropout_add, masked
from .positional_encoding import PositionalEncoding


def encoder_layer(layer: nn.TransformerEncoderLayer, x: Tensor, key_bias: Tensor | None) -> Tensor:
    """The post-norm ``nn.TransformerEncoderLayer`` forward (``norm_first=False``, as built below) on batch-first
    tokens x (B, T, C), written out with the layer's own parameters; key_bias (B, 1, 1, T) is 0 / -inf per key.

    Same math as the module (attention-weight dropout included); written out because its training path spends
    ~40 % of the encoder on overheads that are not math: the packed in-projection is copied into separate q, k, v
    and back in backward, SDPA's masked math path adds a "safe" softmax (isneginf / all / where over (B, H, T, T)),
    and every dropout draws its mask with the slow CPU ``bernoulli_`` (see ``dropout.py``).
    """
    attn, training = layer.self_attn, layer.training
    b, t, c = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, heads, c // heads)
    # one explicit copy to (3, B, H, T, Dh): q, k, v then feed the batched matmuls without copies of their own
    q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
    scores = torch.matmul(q * (c // heads) ** -0.5, k.transpose(-1, -2))  # (B, H, T, T)
    if key_bias is not None:
        scores = scores.add_(key_bias)  # in place: matmul's backward does not need its output
    weights, scale = masked(torch.softmax(scores, dim=-1), attn.dropout, training)
    out = torch.matmul(weights, v)
    if scale != 1.0:  # the dropout scale on the (B, H, T, Dh) output: half the elements of the weights
        out = out.mul_(scale)
    out = F.linear(out.transpose(1, 2).reshape(b, t, c), attn.out_proj.weight, attn.out_proj.bias)
    x = layer.norm1(dropout_add(x, out, layer.dropout1.p, training))
    hidden = dropout(layer.activation(layer.linear1(x)), layer.dropout.p, training)
    return layer.norm2(dropout_add(x, layer.linear2(hidden), layer.dropout2.p, training))


class PBNetEncoder(nn.Module):
    """Per-frame posterior q(z_t | x, audio): one ``audio_latent_dim`` Gaussian per frame.

    Token of frame t = [firstpose(x_0) | pose(x_t - x_0) | audio(a_t)], width
    ``2 * pose_latent_dim + audio_latent_dim`` (384 at full size), + sinusoidal PE, then a post-norm
    ``nn.TransformerEncoder`` (kept as the container of the official keys, fused ``in_proj`` included) whose
    layers run through :func:`encoder_layer`, with padded frames excluded as keys. Outputs at padded frames are
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
        self.sequence_pos_encoder.dropout = Dropout(dropout)
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
        # padded keys get -inf (nn.MultiheadAttention's key_padding_mask); a sequence without any valid frame
        # keeps all its keys, so its (meaningless) outputs stay finite instead of NaN
        hide = ~mask & mask.any(dim=1, keepdim=True)
        key_bias = torch.zeros(hide.shape, dtype=h.dtype, device=h.device).masked_fill_(hide, float("-inf"))
        key_bias = key_bias[:, None, None, :]
        for layer in self.seqTransEncoder.layers:
            h = encoder_layer(layer, h, key_bias)
        if self.seqTransEncoder.norm is not None:
            h = self.seqTransEncoder.norm(h)
        return self.mu_layer(h), self.sigma_layer(h)
