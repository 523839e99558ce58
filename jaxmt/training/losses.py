"""Per-task losses and predictions, each a pure function of (spec, outputs, labels, mask).

`example_mask` weights rows (0 for padding rows), so a padded batch gives the loss of its
real rows alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxmt.data.schema import BINARY, CLASSIFICATION, TaskSpec


def task_loss(spec: TaskSpec, outputs: jax.Array, labels: jax.Array, example_mask: jax.Array) -> jax.Array:
    """Mean loss over real rows: cross-entropy (classes), binary cross-entropy (one logit), MSE (scores)."""
    if spec.kind == CLASSIFICATION:
        per_example = optax.softmax_cross_entropy_with_integer_labels(outputs, labels.astype(jnp.int32))
    elif spec.kind == BINARY:
        per_example = optax.sigmoid_binary_cross_entropy(outputs, labels.astype(jnp.float32))
    else:
        per_example = jnp.square(outputs - labels.astype(jnp.float32))
    weights = example_mask.astype(jnp.float32)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def predict(spec: TaskSpec, outputs: jax.Array) -> jax.Array:
    """The prediction a metric scores: class id, 0/1 paraphrase decision, or similarity score in the
    task's range (a no-op for the sigmoid-bounded linear head; the cosine head's raw score is not bounded)."""
    if spec.kind == CLASSIFICATION:
        return jnp.argmax(outputs, axis=-1).astype(jnp.int32)
    if spec.kind == BINARY:
        return (outputs > 0).astype(jnp.int32)
    return jnp.clip(outputs, spec.label_min, spec.label_max)
