"""Training losses ONNX defines as ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nnlc.graph.ops._common import dtype_of
from nnlc.graph.registry import NodeContext, register


def _negative_log_likelihood(ctx: NodeContext, log_probs: Any, target: Any, weight: Any) -> Any:
    """-log_probs[n, target[n, ...], ...] weighted per class; ignore_index counts for nothing."""
    log_probs, target = jnp.asarray(log_probs), jnp.asarray(target)
    ignore = ctx.attr("ignore_index")
    valid = jnp.ones(target.shape, bool) if ignore is None else target != ignore
    safe_target = jnp.where(valid, target, 0)
    picked = jnp.take_along_axis(log_probs, jnp.expand_dims(safe_target, 1), axis=1).squeeze(1)
    weights = jnp.ones(target.shape, log_probs.dtype) if weight is None else jnp.asarray(weight)[safe_target]
    weights = jnp.where(valid, weights, jnp.zeros_like(weights))
    losses = -picked * weights
    reduction = ctx.attr("reduction", "mean")
    if reduction == "none":
        return losses
    if reduction == "sum":
        return jnp.sum(losses)
    return (jnp.sum(losses) / jnp.sum(weights)).astype(dtype_of(log_probs))


@register("NegativeLogLikelihoodLoss", numpy_ok=False)
def negative_log_likelihood_loss(ctx: NodeContext, log_probs: Any, target: Any, weight: Any = None) -> Any:
    return _negative_log_likelihood(ctx, log_probs, target, weight)


@register("SoftmaxCrossEntropyLoss", numpy_ok=False)
def softmax_cross_entropy_loss(ctx: NodeContext, scores: Any, labels: Any, weight: Any = None) -> tuple[Any, Any]:
    log_probs = jax.nn.log_softmax(jnp.asarray(scores), axis=1)
    return _negative_log_likelihood(ctx, log_probs, labels, weight), log_probs
