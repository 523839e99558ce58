"""Task heads: pure functions of (params, features), with their own init.

A head sees the shared features of an example's sequences ([B, S, D]: S=1 a sentence or a jointly
encoded pair; S=2 siamese pairs u, v, combined as [u; v; |u-v|; u*v]; S=3 triplet pairs u, v and the
joint encoding c, combined as [u; v; |u-v|; u*v; c]) and returns what the task's loss reads: class
logits [B, K], one paraphrase logit [B], or a similarity score [B] inside the task's range.

A regression task over siamese or triplet pairs may take the `cosine` head instead (Sentence-BERT's STS
objective, Reimers & Gurevych 2019): no parameters, the score is `label_min + (label_max -
label_min) * cos(u, v)`, so the MSE loss on the label scale is range^2 times Sentence-BERT's MSE
between cos(u, v) and the label scaled to [0, 1]. The raw score can fall below `label_min` (where
cos < 0) so that its gradient never vanishes; `jaxmt.training.losses.predict` clips it to the range.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmt.data.schema import BINARY, CLASSIFICATION, COSINE, TaskSpec


def combine_pair(features: jax.Array) -> jax.Array:
    """[B, 1, D] -> [B, D]; [B, 2, D] -> [B, 4D] as [u; v; |u - v|; u * v] (Sentence-BERT);
    [B, 3, D] -> [B, 5D] as [u; v; |u - v|; u * v; c] (the triplet: both sentences alone and jointly)."""
    if features.shape[1] == 1:
        return features[:, 0]
    u, v = features[:, 0], features[:, 1]
    return jnp.concatenate([u, v, jnp.abs(u - v), u * v, *([features[:, 2]] if features.shape[1] == 3 else [])],
                           axis=-1)


def cosine_similarity(features: jax.Array, eps: float = 1e-12) -> jax.Array:
    """cos(u, v) [B] of siamese or triplet features [B, 2 or 3, D] (u, v: each sentence alone), in float32;
    `eps` keeps a zero vector's gradient finite."""
    if features.shape[1] not in (2, 3):
        raise ValueError(f"the cosine head needs a sentence pair encoded each alone ([B, 2, D]), got {features.shape}")
    x = features.astype(jnp.float32)
    unit = x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)
    return jnp.sum(unit[:, 0] * unit[:, 1], axis=-1)


def head_input_dim(feature_dim: int, num_sequences: int) -> int:
    return {1: 1, 2: 4, 3: 5}[num_sequences] * feature_dim


def init_head(rng: jax.Array, spec: TaskSpec, input_dim: int, stddev: float = 0.02) -> dict:
    """A linear head, initialised like BERT's classifiers (normal(0.02) weights, zero bias); {} for cosine."""
    if spec.head == COSINE:
        return {}
    kernel = stddev * jax.random.normal(rng, (input_dim, spec.output_dim), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((spec.output_dim,), jnp.float32)}


def apply_head(params: dict, spec: TaskSpec, features: jax.Array) -> jax.Array:
    """Task outputs from shared features [B, S, D]; always float32 for a stable loss."""
    if spec.head == COSINE:
        return spec.label_min + (spec.label_max - spec.label_min) * cosine_similarity(features)
    x = combine_pair(features).astype(jnp.float32)
    out = x @ params["kernel"] + params["bias"]
    if spec.kind == CLASSIFICATION:
        return out
    out = out[:, 0]
    if spec.kind == BINARY:
        return out
    return spec.label_min + (spec.label_max - spec.label_min) * jax.nn.sigmoid(out)
