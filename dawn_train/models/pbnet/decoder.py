"""PBNet decoder (official ``Decoder_TRANSFORMERREEMB5`` with the blocks of ``transformerdecoder4.py``).

Non-autoregressive: every frame is decoded in one pass from frame-aligned memory, so any length works
without seams; frames interact only through relative-position attention (RoPE + T5 bias, and in eval
mode a +-200-frame window), never through absolute positions.  Beyond the window the eval-mode attention
is banded (``attention.BandedBias``): memory O(T x window), so ten minutes of audio (15,000 frames) need
megabytes where the official (H, T, T) bias needs gigabytes; ``banded = False`` restores the dense bias.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .attention import Attention, BandedBias, CrossAttention, PosBias, PreNorm, Residual
from .dropout import Dropout, dropout_add
from .positional_encoding import PositionalEncoding
from .relative_position import RelativePositionBias

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """linear1 -> activation -> dropout -> linear2 (official ``PositionwiseFeedforwardLayer``, which
    hard-codes gelu; here it follows ``activation``, identical for the released gelu models)."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.1, activation: str = "gelu") -> None:
        super().__init__()
        self.act = get_activation(activation)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.act(self.linear1(x))))


class DecoderLayer(nn.Module):
    """Post-norm block: self-attention, cross-attention to the memory, feed-forward (each + residual,
    dropout, then ``nn.LayerNorm``)."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, rotary_dim: int, ff_size: int,
                 dropout: float, activation: str) -> None:
        super().__init__()
        attn_kw = dict(heads=heads, dim_head=dim_head, rotary_dim=rotary_dim)
        self.self_attn = Attention(dim, **attn_kw)
        self.multihead_attn = CrossAttention(dim, **attn_kw)
        self.ffn = FeedForward(dim, ff_size, dropout=dropout, activation=activation)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, tgt_bias: PosBias, mem_bias: PosBias) -> Tensor:
        """x, memory: (B, T, C); biases: (H, T, T) or banded. Returns (B, T, C).
        x may be (B, 1, C): one token shared by all T frames (see ``Attention.forward_constant``)."""
        if x.shape[1] == 1:
            x = x.expand_as(memory)
            attended = self.self_attn.forward_constant(x[:, :1]).expand_as(memory)
        else:
            attended = self.self_attn(x, tgt_bias)
        p, training = self.dropout.p, self.training
        x = self.layer_norm1(dropout_add(x, attended, p, training))
        x = self.layer_norm2(dropout_add(x, self.multihead_attn(x, memory, mem_bias), p, training))
        return self.layer_norm3(dropout_add(x, self.ffn(x), p, training))


class TransformerDecoder(nn.Module):
    """Stack of ``DecoderLayer`` (container named as in the official state dict)."""

    def __init__(self, dim: int, *, num_layers: int, **layer_kw) -> None:
        super().__init__()
        self.decoder_layers = nn.ModuleList(DecoderLayer(dim, **layer_kw) for _ in range(num_layers))

    def forward(self, x: Tensor, memory: Tensor, tgt_bias: PosBias, mem_bias: PosBias) -> Tensor:
        """x: (B, T, C) or (B, 1, C), memory: (B, T, C) -> (B, T, C), through each layer (``DecoderLayer.forward``)."""
        for layer in self.decoder_layers:
            x = layer(x, memory, tgt_bias, mem_bias)
        return x


class PBNetDecoder(nn.Module):
    """p(delta | x_0, z, audio): per-frame offsets from the first frame.

    memory_t = ztimelinear([firstpose(x_0) | z_t | audio(a_t)]) (width ``pose_latent_dim``);
    queries = init_proj(0) (its bias: one learned vector for every frame) -> pre-norm residual
    self-attention -> ``num_layers`` post-norm decoder layers -> ``finallayer``.
    ``mask_padded_keys=True`` (not official, no new weights) hides padded frames from attention so a
    padded sequence decodes like the same sequence alone.
    ``banded=True`` (default): in eval mode, sequences longer than the window attend in bands (O(T x window)
    memory, same result up to float rounding); False builds the official (H, T, T) biases.  A batch with
    padded keys to hide (``mask_padded_keys``) always uses the dense biases.
    Note: the queries are identical for every frame until the first cross-attention, so the initial
    attention and the first self-attention act as a learned constant (their q/k and ``init_proj.weight``
    get no gradient); kept for weight parity, and computed on one token per sequence (same function).
    """

    def __init__(self, *, pos_dim: int = 6, eye_dim: int = 0, audio_dim: int = 1024, pose_latent_dim: int = 64,
                 audio_latent_dim: int = 256, ff_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                 dim_head: int = 32, rotary_dim: int | None = None, dropout: float = 0.1,
                 activation: str = "gelu", num_buckets: int = 128, max_distance: int = 128,
                 eval_window: int | None = 200, max_len: int = 20000, mask_padded_keys: bool = False,
                 banded: bool = True) -> None:
        super().__init__()
        d_in = pos_dim + eye_dim
        self.mask_padded_keys = mask_padded_keys
        self.banded = banded
        # official RotaryEmbedding(min(32, num_heads)): tied to the head count, not the head width
        rotary_dim = min(dim_head, num_heads) if rotary_dim is None else rotary_dim
        self.pose_latent_dim = pose_latent_dim
        # registration order = official state-dict order
        self.firstposeEmbedding = nn.Linear(d_in, pose_latent_dim)
        self.audioEmbedding = nn.Linear(audio_dim, audio_latent_dim)
        self.ztimelinear = nn.Linear(2 * audio_latent_dim + pose_latent_dim, pose_latent_dim)
        self.init_proj = nn.Linear(pose_latent_dim, pose_latent_dim)
        # unused by forward (queries carry no absolute position); kept because checkpoints hold its table
        self.sequence_pos_encoder = PositionalEncoding(pose_latent_dim, dropout=dropout, max_len=max_len)
        bias_kw = dict(heads=num_heads, num_buckets=num_buckets, max_distance=max_distance, eval_window=eval_window)
        self.time_rel_pos_bias_tgt = RelativePositionBias(**bias_kw)  # all self-attentions
        self.time_rel_pos_bias_mem = RelativePositionBias(**bias_kw)  # all cross-attentions
        self.init_temporal_attn = Residual(PreNorm(pose_latent_dim, Attention(
            pose_latent_dim, heads=num_heads, dim_head=dim_head, rotary_dim=rotary_dim)))
        self.seqTransDecoder = TransformerDecoder(
            pose_latent_dim, num_layers=num_layers, heads=num_heads, dim_head=dim_head, rotary_dim=rotary_dim,
            ff_size=ff_size, dropout=dropout, activation=activation)
        self.finallayer = nn.Linear(pose_latent_dim, d_in)

    def forward(self, x0: Tensor, z: Tensor, audio: Tensor, mask: Tensor) -> Tensor:
        """x0: (B, 1, D) first frame (a longer (B, T', D) sequence is cut to its first frame);
        z: (B, T, L); audio: (B, T, A); mask: (B, T) bool, True = valid.
        Returns the delta w.r.t. x0, (B, T, D), exactly 0 on padded frames."""
        b, t = mask.shape
        ref = self.firstposeEmbedding(x0[:, :1].expand(b, t, -1))
        memory = self.ztimelinear(torch.cat([ref, z, self.audioEmbedding(audio)], dim=-1))  # (B, T, C)

        # padded frames stop being keys: (B, 1, 1, T) added to the (H, T, T) biases
        hide = self.mask_padded_keys and not bool(mask.all())
        pad = rearrange((~mask).float() * -1e8, "b j -> b 1 1 j") if hide else None
        tgt_bias = self._bias(self.time_rel_pos_bias_tgt, t, pad)
        mem_bias = self._bias(self.time_rel_pos_bias_mem, t, pad)
        # Every frame's query is init_proj(0) until the first cross-attention, so the initial attention and the
        # first layer's self-attention see a constant sequence: they run on one (B, 1, C) token
        # (Attention.forward_constant, the same function without two (T, T) attentions, forward and backward).
        queries = self.init_proj(memory.new_zeros(b, 1, self.pose_latent_dim))
        init = self.init_temporal_attn  # Residual(PreNorm(Attention)): attention(norm(q)) + q
        queries = init.fn.fn.forward_constant(init.fn.norm(queries)) + queries
        h = self.seqTransDecoder(queries, memory, tgt_bias, mem_bias)
        # by default (official) the mask never enters attention: padded frames still act as keys and
        # only their outputs are zeroed, so valid outputs depend on what the padding contains
        return self.finallayer(h).masked_fill(~mask[..., None], 0.0)

    def _bias(self, table: RelativePositionBias, t: int, pad: Tensor | None) -> PosBias:
        """The attention bias of ``t`` frames: banded beyond the eval window, else (H, T, T) (+ ``pad``)."""
        window = table.window
        if self.banded and pad is None and window is not None and t > window + 1:
            return BandedBias(table.offset_bias, window)
        bias = table(t)  # (H, T, T), broadcast over the batch
        return bias if pad is None else bias + pad.to(bias.dtype)
