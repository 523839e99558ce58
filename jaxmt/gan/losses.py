"""GAN-BERT (Croce et al. 2020) and AC-GAN (Odena et al. 2017) losses, each term weighted from the config.

Everything here reads D's outputs only, so the same terms serve both discriminator forms:
`Discriminator.class_logits` gives the K-way class logits, `log_real_and_fake` the log
probabilities of "real" and "fake" (the K+1-th softmax entry for GAN-BERT, a sigmoid for AC-GAN).
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from jaxmt.gan.networks import ACGAN, FORMS, Discriminator


@flax.struct.dataclass
class LossWeights:
    """The weight of every loss term (config.gan.weights); a pytree, so weights may also be traced arguments."""

    d_supervised: float = 1.0  # D: cross-entropy of labeled real examples
    d_unsupervised: float = 1.0  # D: real-vs-fake on all real and all fake examples
    d_fake_class: float = 1.0  # D (acgan form only): class loss of fakes for their conditioning label
    g_fool: float = 1.0  # G: fakes judged real
    g_feature_matching: float = 1.0  # G: mean D features of fakes match those of real examples
    g_class: float = 1.0  # G: fakes classified as their conditioning label

    @classmethod
    def from_config(cls, weights: ConfigDict, form: str) -> LossWeights:
        """The weights of `config.gan.weights`; an unset (None) `g_class` is 1 for the acgan form and 0 for
        ganbert, which is then pure GAN-BERT (its G has no class loss)."""
        if form not in FORMS:
            raise ValueError(f"discriminator form must be one of {FORMS}, got {form!r}")
        values = {f.name: weights[f.name] for f in dataclasses.fields(cls)}
        if values["g_class"] is None:
            values["g_class"] = 1.0 if form == ACGAN else 0.0
        return cls(**{name: float(value) for name, value in values.items()})


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def class_cross_entropy(d: Discriminator, outputs: dict, labels: jax.Array) -> jax.Array:
    """Per-example K-way cross-entropy [B] (GAN-BERT: the softmax over the K class logits, as Salimans et al.)."""
    return optax.softmax_cross_entropy_with_integer_labels(d.class_logits(outputs), labels.astype(jnp.int32))


def discriminator_losses(d: Discriminator, real_out: dict, fake_out: dict, labels: jax.Array,
                         label_mask: jax.Array, real_mask: jax.Array, fake_labels: jax.Array,
                         w: LossWeights) -> tuple[jax.Array, dict]:
    """D's total loss and its terms: supervised CE on labeled real rows, real-vs-fake on every real row
    (`real_mask`) and every fake, and, for the acgan form, the class loss of the fakes."""
    sup = masked_mean(class_cross_entropy(d, real_out, labels), label_mask * real_mask)
    log_real, _ = d.log_real_and_fake(real_out)
    _, log_fake = d.log_real_and_fake(fake_out)
    unsup = -masked_mean(log_real, real_mask) - jnp.mean(log_fake)
    terms = {"supervised": sup, "unsupervised": unsup}
    total = w.d_supervised * sup + w.d_unsupervised * unsup
    if d.form == ACGAN:
        terms["fake_class"] = jnp.mean(class_cross_entropy(d, fake_out, fake_labels))
        total = total + w.d_fake_class * terms["fake_class"]
    return total, terms


def generator_losses(d: Discriminator, fake_out: dict, fake_feats: jax.Array, real_feats: jax.Array,
                     real_mask: jax.Array, fake_labels: jax.Array, w: LossWeights) -> tuple[jax.Array, dict]:
    """G's total loss and its terms: fooling (non-saturating: -log p(real | fake)), GAN-BERT's feature
    matching (squared distance of the mean D features of real and fake rows), conditional class loss."""
    log_real, _ = d.log_real_and_fake(fake_out)
    fool = -jnp.mean(log_real)
    weights = real_mask.astype(jnp.float32)[:, None]
    real_mean = jnp.sum(real_feats * weights, axis=0) / jnp.maximum(jnp.sum(weights), 1.0)
    feature_matching = jnp.mean(jnp.square(real_mean - jnp.mean(fake_feats, axis=0)))
    cls = jnp.mean(class_cross_entropy(d, fake_out, fake_labels))
    total = w.g_fool * fool + w.g_feature_matching * feature_matching + w.g_class * cls
    return total, {"fool": fool, "feature_matching": feature_matching, "class": cls}
