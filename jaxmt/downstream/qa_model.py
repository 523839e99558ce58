"""Extractive QA over a fine-tuned encoder: start / end span heads as pure functions of (params, hidden states).

Params are `{'encoder': {'bert': BERT tree}, 'span': {'kernel': [H, 2], 'bias': [2]}}`: the
pretrained weights (under FlaxBertModule's names) sit under the same `bert` scope as in the multitask
model, so the project's sharding rules (matched on parameter paths) apply unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxmt.models.encoder import BertEncoder
from jaxmt.models.multitask import matching_encoder_params
from jaxmt.models.options import EncoderOptions

NEG_INF = -1e9  # logit of a position no span may start or end at


def init_span_head(rng: jax.Array, hidden_size: int, stddev: float = 0.02) -> dict:
    """Start and end logits from one [H, 2] projection, initialised like BERT's heads."""
    return {"kernel": stddev * jax.random.normal(rng, (hidden_size, 2), jnp.float32),
            "bias": jnp.zeros((2,), jnp.float32)}


def span_logits(head: dict, hidden: jax.Array, allowed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Start and end logits [B, L] (float32); positions outside `allowed` [B, L] get NEG_INF.

    `allowed` is the context mask plus position 0 ([CLS]), where windows without the answer point.
    """
    logits = hidden.astype(jnp.float32) @ head["kernel"] + head["bias"]
    logits = jnp.where(allowed[..., None] > 0, logits, NEG_INF)
    return logits[..., 0], logits[..., 1]


def allowed_positions(context_mask: jax.Array) -> jax.Array:
    """Context tokens and [CLS] (position 0)."""
    return context_mask.at[:, 0].set(1)


def span_loss(start_logits: jax.Array, end_logits: jax.Array, start_positions: jax.Array,
              end_positions: jax.Array) -> jax.Array:
    """Mean of the start and end cross-entropies over the batch."""
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, start_positions)
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, end_positions)
    return 0.5 * (start.mean() + end.mean())


@dataclasses.dataclass(frozen=True)
class SpanModel:
    """The encoder module and pure init / apply functions over the QA params tree."""

    encoder: BertEncoder

    @classmethod
    def build(cls, bert_config: Any, options: EncoderOptions | None = None) -> SpanModel:
        """The span model over a BERT of `bert_config`, computing as `options` (dtype, remat, attention) say."""
        return cls(BertEncoder(bert_config, **(options or EncoderOptions()).kwargs()))

    def init(self, rng: jax.Array, encoder_params: dict | None = None) -> dict:
        """Fresh params; `encoder_params` (a BERT tree under FlaxBertModule's names) replaces the random encoder."""
        enc_rng, head_rng = jax.random.split(rng)
        dummy = jnp.ones((1, 8), jnp.int32)
        encoder = self.encoder.init(enc_rng, dummy, dummy, jnp.zeros_like(dummy))["params"]
        if encoder_params is not None:
            encoder = {"bert": matching_encoder_params(encoder["bert"], encoder_params)}
        return {"encoder": encoder, "span": init_span_head(head_rng, self.encoder.config.hidden_size)}

    def logits(self, params: dict, batch: dict, *, rng: jax.Array | None = None,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        hidden = self.encoder.apply({"params": params["encoder"]}, batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"], deterministic=deterministic,
                                    rngs=None if deterministic else {"dropout": rng})
        return span_logits(params["span"], hidden, allowed_positions(batch["context_mask"]))

    def loss(self, params: dict, batch: dict, rng: jax.Array) -> jax.Array:
        start, end = self.logits(params, batch, rng=rng, deterministic=False)
        return span_loss(start, end, batch["start_positions"], batch["end_positions"])
