"""The PBNet training fast paths compute what the straightforward code computes: the written-out encoder layer,
cheap dropout masks, the Toeplitz relative-position bias, the constant-sequence attention and the cached RoPE."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dawn_train.models.pbnet import PBNet
from dawn_train.models.pbnet.attention import Attention
from dawn_train.models.pbnet.dropout import Dropout, dropout, dropout_add, keep_mask
from dawn_train.models.pbnet.encoder import encoder_layer
from dawn_train.models.pbnet.relative_position import RelativePositionBias
from dawn_train.models.pbnet.rotary import RotaryEmbedding


def test_keep_mask_rate_and_independence():
    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        mask = keep_mask(torch.Size((400, 1000)), p, torch.device("cpu"))
        assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) <= {0, 1}
        keep = mask.double()
        assert abs(keep.mean().item() - (1 - p)) < 4 * (p * (1 - p) / keep.numel()) ** 0.5 + 1e-4
        # neighbours (the two halves of one 64-bit draw) are uncorrelated
        flat = keep.flatten()
        corr = torch.corrcoef(torch.stack([flat[0::2], flat[1::2]]))[0, 1].item()
        assert abs(corr) < 0.01
    odd = keep_mask(torch.Size((3, 5, 7)), 0.1, torch.device("cpu"))
    assert odd.shape == (3, 5, 7)


def test_dropout_matches_f_dropout_semantics():
    torch.manual_seed(0)
    x = torch.randn(64, 300, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)  # kept elements are scaled by 1 / (1 - p)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert dropout(x, 0.25, training=False) is x or torch.equal(dropout(x, 0.25, training=False), x)
    assert torch.equal(dropout(x, 0.0, training=True), x)
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_dropout_add_is_x_plus_dropout():
    torch.manual_seed(0)
    x, y = torch.randn(32, 200), torch.randn(32, 200, requires_grad=True)
    out = dropout_add(x, y, 0.1, training=True)
    kept = (out - x).abs() > 1e-6
    torch.testing.assert_close(out[kept], (x + y / 0.9)[kept])
    torch.testing.assert_close(out[~kept], x[~kept])
    torch.testing.assert_close(dropout_add(x, y, 0.1, training=False), x + y)


def test_dropout_module_is_an_nn_dropout():
    m = Dropout(0.3)
    assert isinstance(m, nn.Dropout) and m.p == 0.3 and not list(m.state_dict())
    x = torch.randn(10, 10)
    assert torch.equal(m.eval()(x), x)


def _layer(dropout_p: float) -> nn.TransformerEncoderLayer:
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=16, dropout=dropout_p, activation="gelu")


@pytest.mark.parametrize("train", [False, True])
def test_encoder_layer_equals_torch_layer(train):
    """Without dropout, the written-out layer equals nn.TransformerEncoderLayer (sequence-first, key padding),
    forward and gradients, in eval and in train mode."""
    layer = _layer(0.0).train(train)
    x = torch.randn(3, 10, 32)  # (B, T, C)
    lengths = torch.tensor([10, 7, 1])
    mask = torch.arange(10)[None] < lengths[:, None]
    key_bias = torch.zeros(3, 10).masked_fill(~mask, float("-inf"))[:, None, None, :]

    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = encoder_layer(layer, xa, key_bias)
    ref = layer(xb.transpose(0, 1), src_key_padding_mask=~mask).transpose(0, 1)
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(ours)
    grads_ours = torch.autograd.grad(ours, [xa, *layer.parameters()], g)
    grads_ref = torch.autograd.grad(ref, [xb, *layer.parameters()], g)
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_encoder_layer_applies_dropout_in_training_only():
    layer = _layer(0.5)
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(encoder_layer(layer.eval(), x, None), layer(x.transpose(0, 1)).transpose(0, 1),
                               atol=2e-6, rtol=1e-5)
    layer.train()
    assert not torch.allclose(encoder_layer(layer, x, None), encoder_layer(layer, x, None))


@pytest.mark.parametrize("n", [1, 5, 200, 260])
def test_toeplitz_bias_equals_the_gathered_table(n):
    torch.manual_seed(0)
    m = RelativePositionBias(heads=3, num_buckets=32, max_distance=40, eval_window=50)
    nn.init.normal_(m.relative_attention_bias.weight)
    for training in (True, False):
        m.train(training)
        rel = m.offsets(n)
        expected = m.offset_bias(rel)
        if m.window is not None:
            expected = expected + (rel.abs() > m.window).float() * -1e8
        assert torch.equal(m(n), expected)
    # the same gradient reaches the table
    w = torch.randn(3, n, n)
    (ga,) = torch.autograd.grad((m.train()(n) * w).sum(), m.relative_attention_bias.weight)
    (gb,) = torch.autograd.grad((m.offset_bias(m.offsets(n)) * w).sum(), m.relative_attention_bias.weight)
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-5)


def test_constant_sequence_attention_equals_full_attention():
    torch.manual_seed(0)
    attn = Attention(16, heads=4, dim_head=8, rotary_dim=4)
    token = torch.randn(2, 1, 16)
    bias = torch.randn(4, 30, 30)
    full = attn(token.expand(2, 30, 16), bias)
    torch.testing.assert_close(attn.forward_constant(token).expand(2, 30, 16), full, atol=1e-6, rtol=1e-5)


def test_decoder_with_constant_queries_matches_full_computation():
    """The decoder's shortcut (initial attention and first self-attention on one token) gives what running both
    attentions over all frames gives, in eval and in training (dropout 0), outputs and gradients."""
    torch.manual_seed(0)
    model = PBNet(audio_dim=8, pose_latent_dim=16, audio_latent_dim=8, ff_size=16, num_heads=2, dim_head=8,
                  dropout=0.0, max_len=100)
    dec = model.decoder
    b, t = 2, 12
    x0, z, audio = torch.randn(b, 1, 6), torch.randn(b, t, 8), torch.randn(b, t, 8)
    mask = torch.ones(b, t, dtype=torch.bool)

    def full(train: bool) -> torch.Tensor:  # the decoder's forward without the shortcut
        dec.train(train)
        ref = dec.firstposeEmbedding(x0.expand(b, t, -1))
        memory = dec.ztimelinear(torch.cat([ref, z, dec.audioEmbedding(audio)], dim=-1))
        tgt, mem = dec.time_rel_pos_bias_tgt(t), dec.time_rel_pos_bias_mem(t)
        q = dec.init_temporal_attn(dec.init_proj(memory.new_zeros(b, t, memory.shape[-1])), pos_bias=tgt)
        for layer in dec.seqTransDecoder.decoder_layers:
            q = layer.layer_norm1(q + layer.self_attn(q, tgt))
            q = layer.layer_norm2(q + layer.multihead_attn(q, memory, mem))
            q = layer.layer_norm3(q + layer.ffn(q))
        return dec.finallayer(q)

    for train in (False, True):
        ours, ref = dec.train(train)(x0, z, audio, mask), full(train)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    params = [p for n, p in dec.named_parameters() if "init_temporal_attn" not in n and "seqTransDecoder.decoder_layers.0.self_attn" not in n]
    g = torch.randn(b, t, 6)
    ga = torch.autograd.grad(dec.train()(x0, z, audio, mask), params, g, allow_unused=True)
    gb = torch.autograd.grad(full(True), params, g, allow_unused=True)
    for a, c in zip(ga, gb):
        if a is None or c is None:
            assert (a is None or not a.any()) and (c is None or c.abs().max() < 1e-6)
        else:
            torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)


def test_rotary_cache_follows_length_and_loaded_frequencies():
    rot = RotaryEmbedding(4)
    t = torch.randn(1, 2, 7, 8)
    first = rot(t)
    assert torch.equal(rot(t), first)
    assert rot(torch.randn(1, 2, 9, 8)).shape == (1, 2, 9, 8)  # another length recomputes
    rot.load_state_dict({"freqs": rot.freqs * 2})  # new values in place: the cache must not be reused
    ang = torch.arange(7.0)[:, None] * (rot.freqs.repeat_interleave(2))[None]
    rot_part = t[..., :4]
    swapped = torch.stack((-rot_part[..., 1::2], rot_part[..., 0::2]), dim=-1).flatten(-2)
    expected = torch.cat((rot_part * ang.cos() + swapped * ang.sin(), t[..., 4:]), dim=-1)
    torch.testing.assert_close(rot(t), expected)
