"""The encoder: Hugging Face's FlaxBert linen module, wrapped as a plain Flax module."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class BertEncoder(nn.Module):
    """Token ids -> contextual hidden states [B, L, H], with FlaxBert's own layers and weights.

    The pretrained parameters slot in under this module's `bert` scope unchanged, so any
    `FlaxBertModel` checkpoint (and its param names, which sharding rules match on) carries over.
    """

    config: Any  # transformers.BertConfig
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True):
        from transformers.models.bert.modeling_flax_bert import FlaxBertModule

        bert = FlaxBertModule(
            config=self.config,
            dtype=self.dtype,
            add_pooling_layer=False,
            gradient_checkpointing=self.remat,
            name="bert",
        )
        position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        out = bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            head_mask=None,
            deterministic=deterministic,
            return_dict=True,
        )
        return out.last_hidden_state


def pool(hidden, attention_mask, mode: str):
    """Sentence embedding from hidden states: masked mean (sentence-transformers) or [CLS]."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask[..., None].astype(hidden.dtype)
        return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
    raise ValueError(f"pooling must be 'mean' or 'cls', got {mode!r}")
