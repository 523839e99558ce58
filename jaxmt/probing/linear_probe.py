"""Linear probes on frozen per-layer sentence representations.

Each sentence goes through the frozen encoder once (jaxmt's `BertModel`, `output_hidden_states=True`);
the hidden states of the embedding layer and of every encoder layer are mean-pooled over its real
tokens, giving [layers + 1, N, H]. One multinomial logistic-regression probe per layer is trained
on standardised features (full-batch Adam, L2 penalty) — all layers at once with `jax.vmap` — and
scored on the held-out sentences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmt.data.tokenization import bucket_length
from jaxmt.models.bert import BertModel
from jaxmt.probing.classifier import fit_logistic_probe
from jaxmt.probing.tasks import ProbingTask


def _pooled_layers(model: BertModel, params: dict, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """[layers + 1, B, H]: every hidden state (embeddings first) mean-pooled over the real tokens."""
    out = model.apply({"params": params}, input_ids, attention_mask, output_hidden_states=True)
    hidden = jnp.stack(out.hidden_states).astype(jnp.float32)  # [layers + 1, B, L, H]
    mask = attention_mask[None, :, :, None].astype(jnp.float32)
    return (hidden * mask).sum(axis=2) / jnp.maximum(mask.sum(axis=2), 1.0)


class LayerFeatures:
    """Mean-pooled per-layer representations of sentences under one frozen pretrained BERT."""

    def __init__(self, pretrained, max_length: int = 64, batch_size: int = 64,
                 buckets: Sequence[int] = (16, 32, 64, 128)) -> None:
        self.tokenizer = pretrained.tokenizer
        self.params = jax.device_put(pretrained.params)  # once, not with every batch
        self.model = BertModel(pretrained.config, add_pooling_layer=False)
        self.max_length, self.batch_size = max_length, batch_size
        self.buckets = tuple(b for b in buckets if b < max_length) + (max_length,)
        self._pooled = jax.jit(lambda p, ids, mask: _pooled_layers(self.model, p, ids, mask))

    @property
    def num_layers(self) -> int:
        """Hidden states per sentence: the embeddings and each encoder layer."""
        return self.model.config.num_hidden_layers + 1

    def __call__(self, sentences: Sequence[str]) -> np.ndarray:
        """[layers + 1, N, H] float32, in the order of `sentences` (batches padded to a few bucket lengths)."""
        enc = self.tokenizer(list(sentences), truncation=True, max_length=self.max_length)["input_ids"]
        lengths = np.asarray([len(ids) for ids in enc])
        out = np.zeros((self.num_layers, len(enc), self.model.config.hidden_size), np.float32)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            length = bucket_length(int(lengths[idx].max()), self.buckets)
            ids = np.full((self.batch_size, length), self.tokenizer.pad_token_id, np.int32)
            mask = np.zeros((self.batch_size, length), np.int32)
            for row, i in enumerate(idx):
                ids[row, :lengths[i]] = enc[i]
                mask[row, :lengths[i]] = 1
            out[:, idx] = np.asarray(self._pooled(self.params, ids, mask))[:, :len(idx)]
        return out


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    steps: int = 300  # at most this many L-BFGS iterations of the logistic regression
    l2: float = 1e-3  # penalty on the weights (not the bias), per example


def probe_layers(features: np.ndarray, task: ProbingTask, config: ProbeConfig = ProbeConfig()) -> np.ndarray:
    """Test accuracy of one probe per layer, [layers]; `features` is [layers, N, H] for `task.sentences`."""
    accuracies = []
    for x in np.asarray(features):
        probe = fit_logistic_probe(x[task.train], task.labels[task.train], config.l2, config.steps)
        accuracies.append(np.mean(probe.predict(x[task.test]) == task.labels[task.test]))
    return np.asarray(accuracies)


def majority_accuracy(task: ProbingTask) -> float:
    """What always answering the most common training class scores on the test set (chance level)."""
    majority = np.bincount(task.labels[task.train], minlength=task.num_classes).argmax()
    return float(np.mean(task.labels[task.test] == majority))


def probe_model(features: LayerFeatures, tasks: dict[str, ProbingTask],
                config: ProbeConfig = ProbeConfig()) -> dict[str, np.ndarray]:
    """Task -> per-layer test accuracy [layers + 1] of one model."""
    return {name: probe_layers(features(task.sentences), task, config) for name, task in tasks.items()}
