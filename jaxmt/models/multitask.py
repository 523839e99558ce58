"""The multitask model: a shared encoder and shared layers, then one pure head per task."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmt.data.schema import TaskSpec
from jaxmt.models.encoder import BertEncoder, pool, pool_segments
from jaxmt.models.heads import apply_head, head_input_dim, init_head


class SharedBackbone(nn.Module):
    """Encoder -> pooled sentence embedding -> shared dense layers -> dropout.

    Padded inputs are [B, S, L]: S sequences an example (2 siamese, 3 triplet pairs), folded into the
    batch so both sentences go through the encoder in one call. Packed inputs (`jaxmt.data.packing`)
    are rows [R, L] with `segment_ids` and `position_ids`, and `example_segments` [E, S] says which
    segment holds each example's sequences; every sequence is pooled over its own tokens only.
    Either way the output is [B or E, S, F]. `output_dropout=False` leaves out the final dropout, for
    a consumer that applies its own (the GAN's discriminator, which must treat real and generated
    embeddings alike).
    """

    bert_config: Any
    pooling: str = "mean"
    shared_layers: int = 0
    shared_dim: int = 0  # 0: the encoder's hidden size
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True,
                 output_dropout: bool = True, *, position_ids=None, segment_ids=None, example_segments=None):
        encoder = BertEncoder(self.bert_config, dtype=self.dtype, remat=self.remat, name="encoder")
        if example_segments is None:
            b, s, length = input_ids.shape
            flat = lambda x: x.reshape(b * s, length)  # noqa: E731
            hidden = encoder(flat(input_ids), flat(attention_mask), flat(token_type_ids), deterministic=deterministic)
            x = pool(hidden, flat(attention_mask), self.pooling)
        else:
            b, s = example_segments.shape
            hidden = encoder(input_ids, None, token_type_ids, deterministic=deterministic,
                             position_ids=position_ids, segment_ids=segment_ids)
            x = pool_segments(hidden, segment_ids, position_ids, self.pooling)[example_segments.reshape(-1)]
        width = self.shared_dim or self.bert_config.hidden_size
        for i in range(self.shared_layers):
            x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            x = nn.gelu(nn.Dense(width, dtype=self.dtype, name=f"shared_{i}")(x))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic or not output_dropout)
        return x.reshape(b, s, -1)

    @property
    def feature_dim(self) -> int:
        return (self.shared_dim or self.bert_config.hidden_size) if self.shared_layers else self.bert_config.hidden_size


@dataclasses.dataclass(frozen=True)
class MultitaskModel:
    """Pure functions over a params tree {'backbone': ..., 'heads': {task: ...}}."""

    backbone: SharedBackbone
    specs: dict[str, TaskSpec]
    num_sequences: dict[str, int]  # per task: 1, or 2 (siamese) / 3 (triplet) for pairs

    def init(self, rng: jax.Array, encoder_params: dict | None = None) -> dict:
        """Fresh params; `encoder_params` (a FlaxBertModule tree) replaces the random encoder."""
        backbone_rng, head_rng = jax.random.split(rng)
        dummy = jnp.ones((1, 1, 8), jnp.int32)
        backbone = self.backbone.init(backbone_rng, dummy, dummy, jnp.zeros_like(dummy))["params"]
        if encoder_params is not None:
            backbone = dict(backbone)
            backbone["encoder"] = {"bert": matching_encoder_params(backbone["encoder"]["bert"], encoder_params)}
        heads = {
            task: init_head(
                jax.random.fold_in(head_rng, i), spec,
                head_input_dim(self.backbone.feature_dim, self.num_sequences[task]),
            )
            for i, (task, spec) in enumerate(sorted(self.specs.items()))
        }
        return {"backbone": backbone, "heads": heads}

    def features(self, params: dict, batch: dict, *, rng: jax.Array | None, deterministic: bool,
                 output_dropout: bool = True) -> jax.Array:
        """The backbone's features [B, S, F] of a padded or packed batch; `output_dropout=False`: without its
        final dropout."""
        rngs = None if deterministic else {"dropout": rng}
        packed = {k: batch[k] for k in ("position_ids", "segment_ids", "example_segments") if k in batch}
        return self.backbone.apply(
            {"params": params["backbone"]},
            batch["input_ids"], batch.get("attention_mask"), batch["token_type_ids"],
            deterministic=deterministic, output_dropout=output_dropout, rngs=rngs, **packed,
        )

    def outputs(self, params: dict, task: str, batch: dict, *, rng: jax.Array | None = None,
                deterministic: bool = True) -> jax.Array:
        """What task `task`'s loss and predictions read (logits or scores) for `batch`."""
        feats = self.features(params, batch, rng=rng, deterministic=deterministic)
        return apply_head(params["heads"][task], self.specs[task], feats)


def matching_encoder_params(initial: dict, pretrained: dict) -> dict:
    """Pretrained FlaxBert params, checked against the module's own tree (pooler dropped)."""
    pretrained = {k: v for k, v in pretrained.items() if k != "pooler"}
    want = jax.tree_util.tree_map(jnp.shape, initial)
    got = jax.tree_util.tree_map(jnp.shape, pretrained)
    if want != got:
        raise ValueError("the pretrained encoder's parameter tree does not match its config "
                         f"({jax.tree_util.tree_structure(got)} vs {jax.tree_util.tree_structure(want)})")
    # A copy, never an alias: a donated train state must not take the caller's pretrained buffers with it.
    return jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.float32, copy=True), pretrained)
