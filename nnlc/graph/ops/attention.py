"""The Attention operator (opset 23+): scaled dot-product attention with masks, KV cache and GQA."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from nnlc.graph.ops._common import onnx_to_numpy_dtype
from nnlc.graph.registry import NodeContext, register


def _split_heads(x: Any, heads: int) -> Any:
    """[batch, sequence, heads * size] -> [batch, heads, sequence, size]."""
    batch, length, hidden = x.shape
    return jnp.transpose(x.reshape(batch, length, heads, hidden // heads), (0, 2, 1, 3))


def _allowed_bias(allowed: Any, dtype: Any) -> Any:
    return jnp.where(allowed, jnp.zeros((), dtype), jnp.full((), -jnp.inf, dtype))


def _position_bias(q_length: int, kv_length: int, offset: Any, dtype: Any, causal: bool,
                   left: int, right: int) -> Any:
    """0 where query i may attend key j, -inf elsewhere; query i sits at position i + offset
    (offset: a scalar, or one per batch element for a padded static cache)."""
    query = jnp.arange(q_length).reshape(q_length, 1)
    key = jnp.arange(kv_length).reshape(1, kv_length)
    per_batch = jnp.ndim(offset) > 0
    position = query + (jnp.reshape(offset, (-1, 1, 1)) if per_batch else offset)
    allowed = jnp.ones(jnp.broadcast_shapes(position.shape, key.shape), bool)
    if causal:
        allowed &= key <= position
    if left >= 0:
        allowed &= position - key <= left
    if right >= 0:
        allowed &= key - position <= right
    bias = _allowed_bias(allowed, dtype)
    return bias[:, None] if per_batch else bias


def _masked_softmax(scores: Any, bias: Any) -> Any:
    """Softmax over keys; rows whose bias masks every key give zeros, not NaN."""
    peak = jnp.max(scores, axis=-1, keepdims=True)
    peak = jnp.where(jnp.isneginf(peak), jnp.zeros_like(peak), peak)
    exponentials = jnp.exp(scores - peak)
    total = jnp.sum(exponentials, axis=-1, keepdims=True)
    probabilities = exponentials / jnp.where(total == 0, jnp.ones_like(total), total)
    fully_masked = jnp.isneginf(jnp.max(bias, axis=-1, keepdims=True))
    return jnp.where(fully_masked, jnp.zeros_like(probabilities), probabilities)


@register("Attention", numpy_ok=False)
def attention(ctx: NodeContext, q: Any, k: Any, v: Any, attn_mask: Any = None, past_key: Any = None,
              past_value: Any = None, nonpad_kv_seqlen: Any = None) -> tuple[Any, Any, Any, Any]:
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    dtype = q.dtype
    three_d = q.ndim == 3
    if three_d:
        q = _split_heads(q, ctx.attr("q_num_heads"))
        k, v = _split_heads(k, ctx.attr("kv_num_heads")), _split_heads(v, ctx.attr("kv_num_heads"))
    scale = ctx.attr("scale")
    root_scale = np.sqrt(1 / np.sqrt(q.shape[-1]) if scale is None else scale).astype(dtype)
    present_key = k if past_key is None else jnp.concatenate([jnp.asarray(past_key), k], axis=2)
    present_value = v if past_value is None else jnp.concatenate([jnp.asarray(past_value), v], axis=2)
    q_length, kv_length = q.shape[2], present_key.shape[2]

    bias = jnp.zeros((q_length, kv_length), dtype)
    if attn_mask is not None:
        attn_mask = jnp.asarray(attn_mask)
        missing = kv_length - attn_mask.shape[-1]
        if missing > 0:
            fill = False if attn_mask.dtype == bool else -jnp.inf
            attn_mask = jnp.pad(attn_mask, [(0, 0)] * (attn_mask.ndim - 1) + [(0, missing)], constant_values=fill)
        bias = bias + (_allowed_bias(attn_mask, dtype) if attn_mask.dtype == bool else attn_mask.astype(dtype))
    causal = bool(ctx.attr("is_causal", 0))
    left, right = ctx.attr("left_window_size", -1), ctx.attr("right_window_size", -1)
    if causal or left >= 0 or right >= 0:
        if past_key is None and nonpad_kv_seqlen is not None:
            offset = jnp.asarray(nonpad_kv_seqlen).reshape(-1) - q_length
        else:
            offset = 0 if past_key is None else past_key.shape[2]
        bias = bias + _position_bias(q_length, kv_length, offset, dtype, causal, left, right)
    if nonpad_kv_seqlen is not None:
        valid = jnp.arange(kv_length)[None, :] < jnp.asarray(nonpad_kv_seqlen).reshape(-1, 1)
        bias = bias + _allowed_bias(valid, dtype)[:, None, None, :]

    keys, values = present_key, present_value
    if q.shape[1] != keys.shape[1]:  # grouped-query attention: each KV head serves several query heads
        keys = jnp.repeat(keys, q.shape[1] // keys.shape[1], axis=1)
        values = jnp.repeat(values, q.shape[1] // values.shape[1], axis=1)
    scores = jnp.matmul(q * root_scale, jnp.swapaxes(keys * root_scale, -1, -2), precision=ctx.precision)
    softcap = ctx.attr("softcap", 0.0)
    if softcap > 0:
        scores = softcap * jnp.tanh(scores / softcap)
    with_bias = scores + bias
    mode = ctx.attr("qk_matmul_output_mode", 0)
    qk_output = with_bias if mode == 2 else scores
    precision = ctx.attr("softmax_precision")
    softmax_input = with_bias if precision is None else with_bias.astype(onnx_to_numpy_dtype(precision))
    probabilities = _masked_softmax(softmax_input, bias)
    if mode == 3:
        qk_output = probabilities
    y = jnp.matmul(probabilities.astype(dtype), values, precision=ctx.precision)
    if three_d:
        y = jnp.transpose(y, (0, 2, 1, 3)).reshape(y.shape[0], y.shape[2], -1)
    return y, present_key, present_value, qk_output.astype(dtype)


@register("RotaryEmbedding", numpy_ok=False)
def rotary_embedding(ctx: NodeContext, x: Any, cos_cache: Any, sin_cache: Any, position_ids: Any = None) -> Any:
    """Rotates the first `rotary_embedding_dim` features of each head (halves, or interleaved pairs)."""
    x = jnp.asarray(x)
    original = x.shape
    if x.ndim == 4:  # [batch, heads, sequence, size] -> [batch, sequence, heads, size]
        x = jnp.transpose(x, (0, 2, 1, 3))
    else:
        x = x.reshape(x.shape[0], x.shape[1], ctx.attr("num_heads"), -1)
    rotated_dim = ctx.attr("rotary_embedding_dim", 0) or x.shape[-1]
    cos_cache, sin_cache = jnp.asarray(cos_cache), jnp.asarray(sin_cache)
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[jnp.asarray(position_ids)], sin_cache[jnp.asarray(position_ids)]
    cos, sin = cos_cache[:, :, None, :], sin_cache[:, :, None, :]
    rotate, keep = x[..., :rotated_dim], x[..., rotated_dim:]
    interleaved = bool(ctx.attr("interleaved", 0))
    first, second = (rotate[..., 0::2], rotate[..., 1::2]) if interleaved else jnp.split(rotate, 2, axis=-1)
    real, imaginary = cos * first - sin * second, sin * first + cos * second
    if interleaved:
        rotate = jnp.stack([real, imaginary], axis=-1).reshape(rotate.shape)
    else:
        rotate = jnp.concatenate([real, imaginary], axis=-1)
    y = jnp.concatenate([rotate, keep], axis=-1)
    return jnp.transpose(y, (0, 2, 1, 3)) if len(original) == 4 else y.reshape(original)
