"""The hierarchical pre-training model: BERT run layer by layer, each task's head on its own layer.

The encoder is jaxmt's BERT pieces (jaxmt.models.bert) under FlaxBertModel's parameter names
(`embeddings/...`, `encoder/layer/<i>/...`, `pooler/...`), so a Hugging Face checkpoint loads into
it and the trained encoder exports back as one. Running the layers one at a time lets a head read
any layer's hidden states, and lets the NSP representation be injected between layers:

- bigram shift and NSP classify a sentence vector of their layers (NSP through BERT's pooler): the [CLS]
  position ('cls', BERT's way) or the mean over the tokens ('mean', Sentence-BERT's way; a model trained
  with mean pooling, as all-MiniLM-L6-v2 was, has a nearly input-independent [CLS] below its last layers);
- masked LM predicts the masked tokens from its layer, through BERT's transform layer and an output
  projection tied to the word embeddings, plus a bias;
- `transfer` passes the NSP representation upward to the MLM task, through a learned projection:
  'add_cls' adds it to the [CLS] hidden state entering the layer above the NSP layer, 'add_all' to every
  position there, 'concat' appends it to each masked position's input of the MLM head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmt.models.bert import BertEmbeddings, BertLayerStack, BertLMHead, BertPooler, attention_mask_for
from jaxmt.models.encoder import pool

TASKS = ("mlm", "nsp", "bigram_shift")
TRANSFER_MODES = ("none", "add_cls", "add_all", "concat")
POOLING_MODES = ("cls", "mean", "max")  # jaxmt.models.encoder.pool's modes
# Bigram shift's head: a classifier of the sentence vector | per-token scores trained on the example's label |
# per-token scores trained on which tokens moved (and on the example's label through their maximum).
# The token heads reduce their scores to the example's logit by log-sum-exp or by maximum.
TOKEN_HEAD_REDUCE = {"token_scores": "logsumexp", "token_labels": "max"}
BIGRAM_HEADS = ("sentence", *TOKEN_HEAD_REDUCE)
ENCODER_SCOPES = ("embeddings", "encoder", "pooler")  # FlaxBertModel's params; the rest are pre-training heads
# What `optim.learning_rate` trains when `optim.head_learning_rate` is set: the pretrained embeddings and layers.
# The pooler learns with the heads: it is NSP's first layer here, reading whichever layer NSP is placed on,
# and all-MiniLM-L6-v2's sentence-embedding training never used it (it pools by mean).
PRETRAINED_SCOPES = (("embeddings",), ("encoder",))


class SentenceClassifier(nn.Module):
    """Binary classifier on a sentence vector [B, H]: dense + tanh (like BERT's pooler), then 2 logits."""

    hidden_size: int
    initializer_range: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, vector: jax.Array) -> jax.Array:
        init = nn.initializers.normal(self.initializer_range)
        pooled = nn.tanh(nn.Dense(self.hidden_size, kernel_init=init, dtype=self.dtype, name="dense")(vector))
        return nn.Dense(2, kernel_init=init, dtype=self.dtype, name="classifier")(pooled)


class TokenScoreClassifier(nn.Module):
    """Binary 'is something out of place' classifier from per-token scores: [B, L, H] -> ([B, 2], [B, L]).

    Each attended token gets a score (dense + tanh, then one output); the example's positive logit is, against
    a fixed 0, their log-sum-exp (`reduce='logsumexp'`, a smooth maximum) or their maximum ('max': the example
    is positive when some token is). One swapped bigram is a local event: a sentence vector averages it with
    every other token of the example, a per-token score keeps it whole. The scores come back too, for a loss
    on which tokens moved.
    """

    hidden_size: int
    initializer_range: float = 0.02
    reduce: str = "logsumexp"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array, attention_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        init = nn.initializers.normal(self.initializer_range)
        features = nn.tanh(nn.Dense(self.hidden_size, kernel_init=init, dtype=self.dtype, name="dense")(hidden))
        scores = nn.Dense(1, kernel_init=init, dtype=self.dtype, name="scorer")(features)[..., 0].astype(jnp.float32)
        masked = jnp.where(attention_mask > 0, scores, -1e9)  # padding never wins (finite: no inf - inf)
        positive = jax.nn.logsumexp(masked, axis=-1) if self.reduce == "logsumexp" else masked.max(axis=-1)
        return jnp.stack([jnp.zeros_like(positive), positive], axis=-1), scores


class HierarchicalBert(nn.Module):
    """Token ids -> each task's logits, read at `task_layers` (1-based encoder layers)."""

    config: Any  # transformers.BertConfig
    task_layers: tuple[tuple[str, int], ...]  # ((task, layer), ...) for the tasks trained
    transfer: str = "none"
    pooling: str = "cls"  # the sentence vector of NSP and bigram shift: 'cls' | 'mean' | 'max'
    bigram_head: str = "sentence"  # bigram shift's head, one of BIGRAM_HEADS
    dtype: Any = jnp.float32  # compute dtype (params stay float32; losses are taken in float32)
    remat: bool = False  # recompute each layer's activations in the backward pass (length 512 is where it pays)
    remat_policy: str = "full"  # with remat: what a layer keeps (jaxmt.models.bert.REMAT_POLICIES)
    attention_implementation: str | None = None  # jax.nn.dot_product_attention's: None, 'xla' or 'cudnn'

    def setup(self) -> None:
        self.embeddings = BertEmbeddings(self.config, dtype=self.dtype)
        self.encoder = BertLayerStack(self.config, dtype=self.dtype, remat=self.remat, remat_policy=self.remat_policy,
                                      implementation=self.attention_implementation)
        init = nn.initializers.normal(self.config.initializer_range)
        layers = dict(self.task_layers)
        if "nsp" in layers:
            self.pooler = BertPooler(self.config, dtype=self.dtype)
            self.nsp = nn.Dense(2, kernel_init=init, dtype=self.dtype)
        if "mlm" in layers:
            self.mlm = BertLMHead(self.config, dtype=self.dtype)
        if "bigram_shift" in layers:
            if self.bigram_head == "sentence":
                self.bigram_shift = SentenceClassifier(self.config.hidden_size, self.config.initializer_range,
                                                       self.dtype)
            else:
                self.bigram_shift = TokenScoreClassifier(self.config.hidden_size, self.config.initializer_range,
                                                         TOKEN_HEAD_REDUCE[self.bigram_head], self.dtype)
        if self.transfer != "none":
            self.transfer_projection = nn.Dense(self.config.hidden_size, kernel_init=init, dtype=self.dtype)

    def __call__(self, batch: dict[str, jax.Array], deterministic: bool = True) -> dict[str, jax.Array]:
        """`batch` holds input_ids, token_type_ids, attention_mask and mlm_positions [B, P]; returns
        {'mlm': [B, P, vocab], 'nsp': [B, 2], 'bigram_shift': [B, 2]} for the tasks trained, and with
        bigram_head='token_labels' 'bigram_shift_tokens': [B, L], each token's score for having moved."""
        input_ids = batch["input_ids"]
        position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        hidden = self.embeddings(input_ids, batch["token_type_ids"], position_ids, deterministic=deterministic)
        mask = attention_mask_for(batch["attention_mask"])
        layers = dict(self.task_layers)
        outputs, nsp_repr = {}, None
        for number in range(1, self.encoder.num_layers + 1):
            hidden = self.encoder.run_layer(number - 1, hidden, mask, deterministic)
            if layers.get("bigram_shift") == number:
                if self.bigram_head == "sentence":
                    outputs["bigram_shift"] = self.bigram_shift(pool(hidden, batch["attention_mask"], self.pooling))
                else:
                    outputs["bigram_shift"], scores = self.bigram_shift(hidden, batch["attention_mask"])
                    if self.bigram_head == "token_labels":
                        outputs["bigram_shift_tokens"] = scores
            if layers.get("nsp") == number:
                # BertPooler reads position 0 of what it is given: the sentence vector, as a 1-long sequence.
                nsp_repr = self.pooler(pool(hidden, batch["attention_mask"], self.pooling)[:, None])
                outputs["nsp"] = self.nsp(nsp_repr)
                if self.transfer in ("add_cls", "add_all"):
                    injected = self.transfer_projection(nsp_repr)[:, None, :]
                    if self.transfer == "add_cls":
                        injected = injected * (jnp.arange(hidden.shape[1]) == 0)[None, :, None]
                    hidden = hidden + injected
            if layers.get("mlm") == number:
                # A per-row gather (batched over rows), so a batch-sharded hidden state gives batch-sharded
                # masked positions; `hidden[rows, positions]` is a gather over both axes, which GSPMD computed
                # on the whole batch (an all-gather of the positions and an all-reduce of the result).
                masked = jnp.take_along_axis(hidden, batch["mlm_positions"][:, :, None], axis=1)
                if self.transfer == "concat":
                    extra = self.transfer_projection(nsp_repr)[:, None, :]
                    masked = jnp.concatenate([masked, jnp.broadcast_to(extra, masked.shape)], axis=-1)
                embedding = self.embeddings.variables["params"]["word_embeddings"]["embedding"]
                outputs["mlm"] = self.mlm(masked, embedding)
        return outputs


def encoder_params(params: dict) -> dict:
    """The FlaxBertModel part of the model's params (for export and for loading a checkpoint into it)."""
    return {k: params[k] for k in ENCODER_SCOPES if k in params}
