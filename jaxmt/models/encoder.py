"""The encoder: jaxmt's BERT (jaxmt.models.bert) under the `bert` scope, returning the last hidden states."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmt.models.bert import BertModel


class BertEncoder(nn.Module):
    """Token ids -> contextual hidden states [B, L, H].

    The pretrained parameters slot in under this module's `bert` scope with FlaxBertModule's names,
    so Hugging Face checkpoints, older jaxmt checkpoints and the sharding rules (matched on those
    names) carry over. For packed rows pass `segment_ids` instead of `attention_mask`, and
    `position_ids` that restart at 0 in every segment.
    """

    config: Any  # transformers.BertConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_implementation: str | None = None  # jax.nn.dot_product_attention's: None, 'xla' or 'cudnn'
    remat_policy: str = "full"  # with `remat`: what each layer keeps (jaxmt.models.bert.REMAT_POLICIES)

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None, token_type_ids: jax.Array | None,
                 deterministic: bool = True, *, position_ids: jax.Array | None = None,
                 segment_ids: jax.Array | None = None) -> jax.Array:
        bert = BertModel(self.config, dtype=self.dtype, add_pooling_layer=False, remat=self.remat,
                         attention_implementation=self.attention_implementation, remat_policy=self.remat_policy,
                         name="bert")
        return bert(input_ids, attention_mask, token_type_ids, position_ids, segment_ids=segment_ids,
                    deterministic=deterministic).last_hidden_state


def pool(hidden, attention_mask, mode: str):
    """Sentence embedding from hidden states: masked mean (sentence-transformers), [CLS], or the feature-wise
    masked max (pre-training's option: one out-of-place token shows, where a mean over ~60 dilutes it)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask[..., None].astype(hidden.dtype)
        return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
    if mode == "max":
        return jnp.where(attention_mask[..., None] > 0, hidden, jnp.finfo(hidden.dtype).min).max(axis=1)
    raise ValueError(f"pooling must be 'mean', 'cls' or 'max', got {mode!r}")


def pool_segments(hidden: jax.Array, segment_ids: jax.Array, position_ids: jax.Array, example_segments: jax.Array,
                  mode: str) -> jax.Array:
    """Per-sequence embeddings of packed rows, computed within each row group: hidden [G * R, L, H] of G groups of
    R rows, `example_segments` [G, K] (row-in-group * L + segment of each wanted sequence; 0 for none) ->
    [G, K, H]. 'mean' averages a segment's own tokens; 'cls' takes its first; an empty slot gets zeros.

    A [G, K, R * L] one-hot matmul per group rather than a scatter into a flat [G * R * L, H] table: every
    operand keeps the group axis in front, so a group's pooling stays on the device that holds its rows."""
    groups, slots = example_segments.shape
    rows, length, width = hidden.shape
    per_group = rows // groups
    if mode == "cls":
        weights = (position_ids == 0) & (segment_ids > 0)
    elif mode == "mean":
        weights = segment_ids > 0
    else:
        raise ValueError(f"pooling must be 'mean' or 'cls', got {mode!r}")
    key = jnp.arange(per_group)[:, None] * length + segment_ids.reshape(groups, per_group, length)
    key = jnp.where(weights.reshape(groups, per_group, length), key, -1).reshape(groups, 1, per_group * length)
    onehot = (example_segments[:, :, None] == key).astype(hidden.dtype)  # [G, K, R * L]
    sums = jnp.einsum("gkt,gth->gkh", onehot, hidden.reshape(groups, per_group * length, width))
    return sums / jnp.maximum(onehot.sum(axis=-1, keepdims=True), 1.0)
