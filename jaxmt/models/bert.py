"""jaxmt's own Flax BERT, under Hugging Face FlaxBertModule's parameter names and shapes.

Why not transformers' FlaxBert: transformers v5 dropped its Flax models, and FlaxBert's attention takes
only a key padding mask, so it cannot run packed sequences (several examples in one row, each token
attending only to its own example). Here attention takes a boolean mask of any broadcastable shape,
built by `attention_mask_for` from either a padding mask or per-token segment ids.

The parameter tree is exactly FlaxBertModule's (`embeddings/word_embeddings/embedding`,
`encoder/layer/<i>/attention/self/query/kernel`, ..., `pooler/dense`), with the same initialisers
created in the same order, so Hugging Face checkpoints, the regex sharding rules and existing Orbax
checkpoints load unchanged, and a seed gives the same random weights as `FlaxBertModel(config, seed=...)`.

The pieces are separate modules (`BertEmbeddings`, `BertLayerStack`, `BertPooler`, `BertLMHead`) so a
model can run the layers one at a time (`BertLayerStack.run_layer`), as hierarchical pre-training does.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmt.parallel.mesh import constrain_batch, gather_weight

ACTIVATIONS = {  # config.hidden_act -> function, as transformers' Flax ACT2FN
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "silu": nn.swish,
    "swish": nn.swish,
    "tanh": nn.tanh,
}


# model.remat_policy -> what a rematerialised layer keeps from its forward pass (jax.checkpoint_policies):
# 'full' keeps only its input and recomputes everything; the 'dots' policies keep the matmul outputs (most of
# the recomputation's FLOPs, ~1/2 to 2/3 of the activation memory), '..._no_batch_dims' only the weight matmuls.
REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
ATTENTION_IMPLEMENTATIONS = ("default", "xla", "cudnn")  # model.attention_implementation; default: JAX picks


def attention_implementation(name: str) -> str | None:
    """`jax.nn.dot_product_attention`'s `implementation` for the config's name ('default' -> None: JAX picks)."""
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {name!r}")
    return None if name == "default" else name


def _normal_init(config: Any) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=config.initializer_range)


def attention_mask_for(attention_mask: jax.Array | None = None,
                       segment_ids: jax.Array | None = None) -> jax.Array | None:
    """The boolean attention mask, broadcastable to [B, heads, query, key], or None for "attend everywhere".

    `attention_mask` [B, L] (1 real, 0 padding) masks padding keys, as BERT does. `segment_ids` [B, L]
    (0 padding, k > 0 the k-th example packed in the row) lets a token attend only to tokens of its own
    segment; padding attends to padding, so no row of the mask is empty and no real token sees padding.
    """
    if attention_mask is not None and segment_ids is not None:
        raise ValueError("give attention_mask or segment_ids, not both (segment 0 already marks padding)")
    if segment_ids is not None:
        return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None, :, :]
    if attention_mask is not None:
        return (attention_mask > 0)[:, None, None, :]
    return None


def hidden_activation(config: Any) -> Any:
    """The activation `config.hidden_act` names; a clear error for one this BERT does not implement."""
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"config.hidden_act = {config.hidden_act!r} is not supported; "
                         f"use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[config.hidden_act]


class GatheredEmbed(nn.Embed):
    """`nn.Embed` (same parameter, same lookup) that gathers an FSDP-sharded table before the lookup
    (`jaxmt.parallel.mesh.gather_weight`), so the looked-up rows come out batch-sharded with no all-to-all."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        (table,) = flax.linen.dtypes.promote_dtype(self.embedding, dtype=self.dtype, inexact=False)
        return jnp.take(gather_weight(table), inputs, axis=0)


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    config: Any  # transformers.BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        init = _normal_init(self.config)
        size = self.config.hidden_size
        self.word_embeddings = GatheredEmbed(self.config.vocab_size, size, embedding_init=init, dtype=self.dtype)
        self.position_embeddings = GatheredEmbed(self.config.max_position_embeddings, size, embedding_init=init,
                                                 dtype=self.dtype)
        self.token_type_embeddings = GatheredEmbed(self.config.type_vocab_size, size, embedding_init=init,
                                                   dtype=self.dtype)
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)
        self.dropout = nn.Dropout(rate=self.config.hidden_dropout_prob)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, position_ids: jax.Array,
                 deterministic: bool = True) -> jax.Array:
        hidden = (self.word_embeddings(input_ids.astype(jnp.int32))
                  + self.token_type_embeddings(token_type_ids.astype(jnp.int32))
                  + self.position_embeddings(position_ids.astype(jnp.int32)))
        return self.dropout(self.LayerNorm(hidden), deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention: query/key/value projections, then `jax.nn.dot_product_attention`.

    With attention dropout active (training, `attention_probs_dropout_prob > 0`) the softmax is written
    out, since the fused function has no dropout (docs/performance.md, the attention path table); set the
    probability to 0 to train on the fused kernel. Logits and softmax are float32 on either path.
    """

    config: Any
    dtype: Any = jnp.float32
    implementation: str | None = None  # jax.nn.dot_product_attention's: None (JAX picks), 'xla' or 'cudnn'

    def setup(self) -> None:
        if self.config.hidden_size % self.config.num_attention_heads:
            raise ValueError(f"config.hidden_size = {self.config.hidden_size} is not a multiple of "
                             f"config.num_attention_heads = {self.config.num_attention_heads}")
        init = _normal_init(self.config)
        self.query = nn.Dense(self.config.hidden_size, kernel_init=init, dtype=self.dtype)
        self.key = nn.Dense(self.config.hidden_size, kernel_init=init, dtype=self.dtype)
        self.value = nn.Dense(self.config.hidden_size, kernel_init=init, dtype=self.dtype)
        self.dropout = nn.Dropout(rate=self.config.attention_probs_dropout_prob)

    def __call__(self, hidden: jax.Array, mask: jax.Array | None, deterministic: bool = True) -> jax.Array:
        heads = self.config.num_attention_heads
        split = lambda x: x.reshape(x.shape[:2] + (heads, -1))  # noqa: E731  [B, L, heads, head_dim]
        query, key, value = split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden))
        query = query / jnp.asarray(math.sqrt(query.shape[-1]), query.dtype)  # scaled first, as FlaxBert does
        if deterministic or self.config.attention_probs_dropout_prob == 0.0:
            if mask is not None and self.implementation == "cudnn":  # cuDNN takes the mask as a [B, 1, L, L] bias
                mask = jnp.broadcast_to(mask, (mask.shape[0], 1, query.shape[1], key.shape[1]))
            out = jax.nn.dot_product_attention(query, key, value, mask=mask, scale=1.0,
                                               implementation=self.implementation)
        else:
            logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
            if mask is not None:
                logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
            weights = self.dropout(jax.nn.softmax(logits, axis=-1), deterministic=False).astype(value.dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return out.reshape(out.shape[:2] + (-1,))


class BertOutput(nn.Module):
    """Dense projection to hidden_size, dropout, residual + LayerNorm: the end of the attention block (the
    `attention/output` scope) and of the MLP (`output`), one module since Hugging Face's two are the same."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = nn.Dense(self.config.hidden_size, kernel_init=_normal_init(self.config), dtype=self.dtype)
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)
        self.dropout = nn.Dropout(rate=self.config.hidden_dropout_prob)

    def __call__(self, hidden: jax.Array, residual: jax.Array, deterministic: bool = True) -> jax.Array:
        hidden = self.dropout(self.dense(hidden), deterministic=deterministic)
        return self.LayerNorm(hidden + residual)


class BertAttention(nn.Module):
    """Self-attention and its output block (the `attention/self` and `attention/output` scopes)."""

    config: Any
    dtype: Any = jnp.float32
    implementation: str | None = None

    def setup(self) -> None:
        self.self = BertSelfAttention(self.config, dtype=self.dtype, implementation=self.implementation)
        self.output = BertOutput(self.config, dtype=self.dtype)

    def __call__(self, hidden: jax.Array, mask: jax.Array | None, deterministic: bool = True) -> jax.Array:
        return self.output(self.self(hidden, mask, deterministic=deterministic), hidden, deterministic=deterministic)


class BertIntermediate(nn.Module):
    """The MLP's expansion: dense to intermediate_size, then the activation (exact-erf GELU for 'gelu')."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = nn.Dense(self.config.intermediate_size, kernel_init=_normal_init(self.config), dtype=self.dtype)
        self.activation = hidden_activation(self.config)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.activation(self.dense(hidden))


class BertLayer(nn.Module):
    """One transformer layer: attention block, then the MLP block."""

    config: Any
    dtype: Any = jnp.float32
    implementation: str | None = None

    def setup(self) -> None:
        self.attention = BertAttention(self.config, dtype=self.dtype, implementation=self.implementation)
        self.intermediate = BertIntermediate(self.config, dtype=self.dtype)
        self.output = BertOutput(self.config, dtype=self.dtype)

    def __call__(self, hidden: jax.Array, mask: jax.Array | None, deterministic: bool = True) -> jax.Array:
        attended = self.attention(hidden, mask, deterministic=deterministic)
        return self.output(self.intermediate(attended), attended, deterministic=deterministic)


class BertLayerCollection(nn.Module):
    """The layers, named '0', '1', ... (the `encoder/layer` scope); each rematerialised when `remat`, keeping
    what `remat_policy` (a REMAT_POLICIES name) saves."""

    config: Any
    dtype: Any = jnp.float32
    remat: bool = False
    implementation: str | None = None
    remat_policy: str = "full"

    def setup(self) -> None:
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat policy must be one of {sorted(REMAT_POLICIES)}, got {self.remat_policy!r}")
        # static_argnums counts self as 0: `deterministic` (3) changes the traced graph.
        layer_class = (nn.remat(BertLayer, static_argnums=(3,), policy=REMAT_POLICIES[self.remat_policy])
                       if self.remat else BertLayer)
        self.layers = [layer_class(self.config, dtype=self.dtype, implementation=self.implementation, name=str(i))
                       for i in range(self.config.num_hidden_layers)]


class BertLayerStack(nn.Module):
    """All layers (the `encoder` scope): run together, or one at a time with `run_layer`."""

    config: Any
    dtype: Any = jnp.float32
    remat: bool = False
    implementation: str | None = None
    remat_policy: str = "full"

    def setup(self) -> None:
        self.layer = BertLayerCollection(self.config, dtype=self.dtype, remat=self.remat,
                                         implementation=self.implementation, remat_policy=self.remat_policy)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def run_layer(self, index: int, hidden: jax.Array, mask: jax.Array | None,
                  deterministic: bool = True) -> jax.Array:
        """Layer `index` (0-based) alone; `mask` comes from `attention_mask_for`."""
        hidden = self.layer.layers[index](constrain_batch(hidden), mask, deterministic)  # positional: remat's
        return constrain_batch(hidden)  # static argnum; batch-sharded activations (FSDP gathers the weights)

    def __call__(self, hidden: jax.Array, mask: jax.Array | None, deterministic: bool = True,
                 output_hidden_states: bool = False) -> tuple[jax.Array, tuple[jax.Array, ...] | None]:
        """(last layer's output, (input, each layer's output) or None)."""
        states = [hidden]
        for index in range(self.num_layers):
            hidden = self.run_layer(index, hidden, mask, deterministic)
            states.append(hidden)
        return hidden, tuple(states) if output_hidden_states else None


class BertPooler(nn.Module):
    """BERT's pooler: dense + tanh on the [CLS] (first) position."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = nn.Dense(self.config.hidden_size, kernel_init=_normal_init(self.config), dtype=self.dtype)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return nn.tanh(self.dense(hidden[:, 0]))


class BertPredictionTransform(nn.Module):
    """The MLM head's dense + activation + LayerNorm (the `transform` scope)."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = nn.Dense(self.config.hidden_size, dtype=self.dtype)
        self.activation = hidden_activation(self.config)
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.LayerNorm(self.activation(self.dense(hidden)))


class BertLMHead(nn.Module):
    """Masked-LM logits: the transform, then the word embeddings (tied, passed in) transposed, plus a bias."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.transform = BertPredictionTransform(self.config, dtype=self.dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,))

    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        hidden = self.transform(hidden)
        return hidden @ jnp.asarray(word_embeddings, self.dtype).T + jnp.asarray(self.bias, self.dtype)


@flax.struct.dataclass
class BertOutputs:
    """What `BertModel` returns; `hidden_states` is (embeddings, layer 1, ..., layer N) when asked for."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None


class BertModel(nn.Module):
    """Token ids -> hidden states: embeddings, the layer stack and (optionally) the pooler.

    `dtype` is the compute dtype; params stay float32. `remat` recomputes each layer's activations in the
    backward pass instead of storing them, keeping what `remat_policy` (a REMAT_POLICIES name) saves.
    """

    config: Any  # transformers.BertConfig
    dtype: Any = jnp.float32
    add_pooling_layer: bool = True
    remat: bool = False
    attention_implementation: str | None = None  # jax.nn.dot_product_attention's `implementation`
    remat_policy: str = "full"

    def setup(self) -> None:
        self.embeddings = BertEmbeddings(self.config, dtype=self.dtype)
        self.encoder = BertLayerStack(self.config, dtype=self.dtype, remat=self.remat,
                                      implementation=self.attention_implementation, remat_policy=self.remat_policy)
        if self.add_pooling_layer:
            self.pooler = BertPooler(self.config, dtype=self.dtype)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None, *,
                 segment_ids: jax.Array | None = None, deterministic: bool = True,
                 output_hidden_states: bool = False) -> BertOutputs:
        """`attention_mask` [B, L] (1 real, 0 padding) or `segment_ids` [B, L] (packing; see
        `attention_mask_for`); for packed rows pass `position_ids` that restart at 0 in every segment."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, deterministic=deterministic)
        mask = attention_mask_for(attention_mask, segment_ids)
        hidden, states = self.encoder(hidden, mask, deterministic=deterministic,
                                      output_hidden_states=output_hidden_states)
        pooled = self.pooler(hidden) if self.add_pooling_layer else None
        return BertOutputs(last_hidden_state=hidden, pooler_output=pooled, hidden_states=states)


def init_bert_params(config: Any, seed: int = 0) -> dict:
    """Random params of a BERT with pooler, equal to `FlaxBertModel(config, seed=seed).params`."""
    params_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    ids = jnp.zeros((1, 1), jnp.int32)
    variables = BertModel(config).init({"params": params_rng, "dropout": dropout_rng}, ids, jnp.ones_like(ids))
    return variables["params"]
