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
    batch so both sentences go through the encoder in one call; the output is [B, S, F]. Packed inputs
    (`jaxmt.data.packing`) are G row groups [G * R, L] with `segment_ids` and `position_ids` (the rows of
    every task a step trains, joined group by group: `MultitaskModel.packed_features`), and
    `example_segments`, one [G, E, S] array per task, says which segment of its group holds each example's
    sequences; every sequence is pooled over its own tokens, within its group, and the output is one
    [G * E, S, F] per task. `output_dropout=False` leaves out the final dropout, for
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
    remat_policy: str = "full"  # with remat: what each layer keeps (jaxmt.models.bert.REMAT_POLICIES)
    attention_implementation: str | None = None  # jax.nn.dot_product_attention's: None, 'xla' or 'cudnn'

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True,
                 output_dropout: bool = True, *, position_ids=None, segment_ids=None, example_segments=None):
        encoder = BertEncoder(self.bert_config, dtype=self.dtype, remat=self.remat, remat_policy=self.remat_policy,
                              attention_implementation=self.attention_implementation, name="encoder")
        if example_segments is None:
            b, s, length = input_ids.shape
            flat = lambda x: x.reshape(b * s, length)  # noqa: E731
            hidden = encoder(flat(input_ids), flat(attention_mask), flat(token_type_ids), deterministic=deterministic)
            x = pool(hidden, flat(attention_mask), self.pooling)
        else:
            hidden = encoder(input_ids, None, token_type_ids, deterministic=deterministic,
                             position_ids=position_ids, segment_ids=segment_ids)
            groups = example_segments[0].shape[0]
            x = pool_segments(hidden, segment_ids, position_ids,
                              jnp.concatenate([e.reshape(groups, -1) for e in example_segments], axis=1),
                              self.pooling)  # [G, K, H]: every task's sequences, pooled in one pass
        width = self.shared_dim or self.bert_config.hidden_size
        for i in range(self.shared_layers):
            x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            x = nn.gelu(nn.Dense(width, dtype=self.dtype, name=f"shared_{i}")(x))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic or not output_dropout)
        if example_segments is None:
            return x.reshape(b, s, -1)
        out, start = [], 0
        for e in example_segments:  # each task's [G, E, S] slots back out, groups in front
            g, slots, s = e.shape
            out.append(x[:, start:start + slots * s].reshape(g * slots, s, -1))
            start += slots * s
        return tuple(out)

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
        if is_packed(batch):
            return self.packed_features(params, {"": batch}, rng=rng, deterministic=deterministic,
                                        output_dropout=output_dropout)[""]
        rngs = None if deterministic else {"dropout": rng}
        return self.backbone.apply(
            {"params": params["backbone"]},
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
            deterministic=deterministic, output_dropout=output_dropout, rngs=rngs,
        )

    def packed_features(self, params: dict, batches: dict[str, dict], *, rng: jax.Array | None, deterministic: bool,
                        output_dropout: bool = True) -> dict[str, jax.Array]:
        """Features [G * E, S, F] of each task's packed batch, all tasks' rows through the encoder in one call.

        The tasks' rows are joined group by group ([G, R_t, L] side by side to [G, sum R_t, L]), so a group's rows
        of every task stay where that group lives, and each task's `example_segments` move by the rows before it.
        """
        tasks = list(batches)
        groups = batches[tasks[0]]["example_segments"].shape[0]
        length = batches[tasks[0]]["input_ids"].shape[-1]

        def joined(key):
            parts = [batches[t][key].reshape(groups, -1, length) for t in tasks]
            return jnp.concatenate(parts, axis=1).reshape(-1, length)

        segments, offset = [], 0
        for t in tasks:
            e = batches[t]["example_segments"]
            segments.append(jnp.where(e > 0, e + offset * length, 0))
            offset += batches[t]["input_ids"].shape[0] // groups
        rngs = None if deterministic else {"dropout": rng}
        feats = self.backbone.apply(
            {"params": params["backbone"]}, joined("input_ids"), None, joined("token_type_ids"),
            deterministic=deterministic, output_dropout=output_dropout, rngs=rngs,
            position_ids=joined("position_ids"), segment_ids=joined("segment_ids"), example_segments=tuple(segments),
        )
        return dict(zip(tasks, feats))

    def outputs(self, params: dict, task: str, batch: dict, *, rng: jax.Array | None = None,
                deterministic: bool = True) -> jax.Array:
        """What task `task`'s loss and predictions read (logits or scores) for `batch`."""
        feats = self.features(params, batch, rng=rng, deterministic=deterministic)
        return apply_head(params["heads"][task], self.specs[task], feats)

    def packed_outputs(self, params: dict, batches: dict[str, dict], *, rng: jax.Array | None = None,
                       deterministic: bool = True) -> dict[str, jax.Array]:
        """`outputs` of every task's packed batch from one encoder pass (`packed_features`)."""
        feats = self.packed_features(params, batches, rng=rng, deterministic=deterministic)
        return {t: apply_head(params["heads"][t], self.specs[t], f) for t, f in feats.items()}


def is_packed(batch: dict) -> bool:
    """A packed batch (`jaxmt.data.packing`) rather than a padded one."""
    return "example_segments" in batch


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
