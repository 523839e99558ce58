"""The generator and the discriminator: small MLPs as pure functions of (params, inputs, rng).

Both sit on top of the encoder's pooled sentence embeddings (feature dim D). G maps noise and a
one-hot class to a fake embedding; D classifies real and fake embeddings. Plain pytrees of
{'kernel', 'bias'} layers keep them easy to shard (replicated), checkpoint and differentiate
separately from the encoder.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

GANBERT, ACGAN = "ganbert", "acgan"
FORMS = (GANBERT, ACGAN)


def init_dense(rng: jax.Array, in_dim: int, out_dim: int) -> dict:
    """LeCun-normal kernel (keeps activations at unit scale through leaky ReLUs), zero bias."""
    kernel = jax.random.normal(rng, (in_dim, out_dim), jnp.float32) / jnp.sqrt(jnp.float32(in_dim))
    return {"kernel": kernel, "bias": jnp.zeros((out_dim,), jnp.float32)}


def dense(layer: dict, x: jax.Array) -> jax.Array:
    return x @ layer["kernel"] + layer["bias"]


def dropout(rng: jax.Array | None, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Inverted dropout; the identity when deterministic or rate 0 (no rng needed then)."""
    if deterministic or rate == 0.0:
        return x
    if rng is None:
        raise ValueError("dropout needs an rng when deterministic=False")
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _hidden(params: list[dict], x: jax.Array, rng: jax.Array | None, rate: float, slope: float,
            deterministic: bool) -> jax.Array:
    """Dense -> leaky ReLU -> dropout, for every hidden layer."""
    for i, layer in enumerate(params):
        x = jax.nn.leaky_relu(dense(layer, x), slope)
        layer_rng = None if rng is None else jax.random.fold_in(rng, i)
        x = dropout(layer_rng, x, rate, deterministic)
    return x


@dataclasses.dataclass(frozen=True)
class Generator:
    """G(z, y): noise [B, noise_dim] and labels [B] -> fake embeddings [B, feature_dim] (float32).

    With `unlabeled_slot` the one-hot has K+1 entries and label K means "no label": the AC-GAN-BERT
    authors condition G on each real row's label, and an unlabeled row's is a label of its own there.
    """

    num_classes: int
    feature_dim: int
    noise_dim: int = 100
    hidden: tuple[int, ...] = (768,)
    dropout_rate: float = 0.1
    slope: float = 0.2
    unlabeled_slot: bool = False

    @property
    def num_conditions(self) -> int:
        """Entries of G's one-hot label input: the K classes, and "no label" with `unlabeled_slot`."""
        return self.num_classes + int(self.unlabeled_slot)

    def init(self, rng: jax.Array) -> dict:
        dims = (self.noise_dim + self.num_conditions, *self.hidden)
        rngs = jax.random.split(rng, len(self.hidden) + 1)
        layers = [init_dense(rngs[i], dims[i], dims[i + 1]) for i in range(len(self.hidden))]
        return {"hidden": layers, "out": init_dense(rngs[-1], dims[-1], self.feature_dim)}

    def sample_noise(self, rng: jax.Array, n: int) -> jax.Array:
        return jax.random.uniform(rng, (n, self.noise_dim), jnp.float32)  # as GAN-BERT: U(0, 1)

    def __call__(self, params: dict, noise: jax.Array, labels: jax.Array, rng: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        x = jnp.concatenate([noise.astype(jnp.float32), jax.nn.one_hot(labels, self.num_conditions)], axis=-1)
        x = _hidden(params["hidden"], x, rng, self.dropout_rate, self.slope, deterministic)
        return dense(params["out"], x)  # linear: embeddings are unbounded


@dataclasses.dataclass(frozen=True)
class Discriminator:
    """D(x): embeddings [B, feature_dim] -> (outputs, intermediate features [B, H]).

    form 'ganbert': outputs {'logits': [B, K+1]}, the last logit meaning "fake".
    form 'acgan':   outputs {'source': [B] real-vs-fake logit (>0 real), 'classes': [B, K]}.
    The intermediate features (the last hidden layer) feed G's feature-matching loss.
    """

    num_classes: int
    feature_dim: int
    form: str = ACGAN
    hidden: tuple[int, ...] = (768,)
    dropout_rate: float = 0.1
    slope: float = 0.2

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"discriminator form must be one of {FORMS}, got {self.form!r}")
        if not self.hidden:
            raise ValueError("the discriminator needs at least one hidden layer (feature matching reads it)")

    def init(self, rng: jax.Array) -> dict:
        dims = (self.feature_dim, *self.hidden)
        rngs = jax.random.split(rng, len(self.hidden) + 2)
        layers = [init_dense(rngs[i], dims[i], dims[i + 1]) for i in range(len(self.hidden))]
        if self.form == GANBERT:
            return {"hidden": layers, "logits": init_dense(rngs[-1], dims[-1], self.num_classes + 1)}
        return {"hidden": layers, "source": init_dense(rngs[-2], dims[-1], 1),
                "classes": init_dense(rngs[-1], dims[-1], self.num_classes)}

    def input_dropout(self, x: jax.Array, rng: jax.Array | None, deterministic: bool) -> jax.Array:
        """GAN-BERT's dropout on D's input: the one transformation real and fake rows share before D's layers."""
        in_rng = None if rng is None else jax.random.fold_in(rng, 1_000)
        return dropout(in_rng, x.astype(jnp.float32), self.dropout_rate, deterministic)

    def __call__(self, params: dict, x: jax.Array, rng: jax.Array | None = None,
                 deterministic: bool = True) -> tuple[dict, jax.Array]:
        x = self.input_dropout(x, rng, deterministic)
        feats = _hidden(params["hidden"], x, rng, self.dropout_rate, self.slope, deterministic)
        if self.form == GANBERT:
            return {"logits": dense(params["logits"], feats)}, feats
        return {"source": dense(params["source"], feats)[:, 0], "classes": dense(params["classes"], feats)}, feats

    def class_logits(self, outputs: dict) -> jax.Array:
        """The K-way class logits [B, K], whatever the form: what dev accuracy reads."""
        return outputs["logits"][:, : self.num_classes] if self.form == GANBERT else outputs["classes"]

    def log_real_and_fake(self, outputs: dict) -> tuple[jax.Array, jax.Array]:
        """(log p(real | x), log p(fake | x)) [B] each, computed stably from the logits."""
        if self.form == GANBERT:
            logits = outputs["logits"]
            total = jax.nn.logsumexp(logits, axis=-1)
            return jax.nn.logsumexp(logits[:, :-1], axis=-1) - total, logits[:, -1] - total
        s = outputs["source"]
        return jax.nn.log_sigmoid(s), jax.nn.log_sigmoid(-s)
