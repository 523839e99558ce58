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
    g_class_feature_matching: float = 0.0  # G: per class, mean D features of fakes match the labeled real rows'
    g_class_embedding_matching: float = 0.0  # G: the same on the embeddings themselves (D's input, the probe's space)

    @classmethod
    def from_config(cls, weights: ConfigDict, form: str) -> LossWeights:
        """The weights of `config.gan.weights`; an unset (None) `g_class` is 1 for the acgan form and 0 for
        ganbert, which is then pure GAN-BERT (its G has no class loss)."""
        if form not in FORMS:
            raise ValueError(f"discriminator form must be one of {FORMS}, got {form!r}")
        values = {f.name: weights.get(f.name, f.default) for f in dataclasses.fields(cls)}
        if values["g_class"] is None:
            values["g_class"] = 1.0 if form == ACGAN else 0.0
        return cls(**{name: float(value) for name, value in values.items()})


def masked_mean(values: jax.Array, mask: jax.Array, count: jax.Array | None = None) -> jax.Array:
    """The mean of `values` over `mask`; with `count` (the mask's sum over a whole accumulated step) the share of
    that step's mean these rows hold."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask) if count is None else count, 1.0)


@flax.struct.dataclass
class StepCounts:
    """What D's loss terms and statistics divide by, counted once over the whole step's rows and fakes.

    Under gradient accumulation a micro-batch's sums divided by these are its exact share of the step's means
    (its own counts would not do: labeled rows, for one, fall unevenly into the micro-batches). They do not
    depend on the params, so their gradients are nil either way."""

    rows: jax.Array  # real rows, padding included (D's p_real statistics average over them)
    real: jax.Array  # real rows (example_mask)
    labeled: jax.Array  # labeled real rows (label_mask * example_mask)
    fakes: jax.Array  # fakes
    conditioned: jax.Array  # fakes conditioned on a class (not on "no label")

    @classmethod
    def of(cls, num_classes: int, label_mask: jax.Array, real_mask: jax.Array, fake_labels: jax.Array) -> StepCounts:
        total = lambda mask: jnp.sum(mask.astype(jnp.float32))  # noqa: E731
        return cls(rows=jnp.float32(real_mask.shape[0]), real=total(real_mask), labeled=total(label_mask * real_mask),
                   fakes=jnp.float32(fake_labels.shape[0]), conditioned=total(fake_labels < num_classes))


def class_cross_entropy(d: Discriminator, outputs: dict, labels: jax.Array) -> jax.Array:
    """Per-example K-way cross-entropy [B] (GAN-BERT: the softmax over the K class logits, as Salimans et al.)."""
    return optax.softmax_cross_entropy_with_integer_labels(d.class_logits(outputs), labels.astype(jnp.int32))


def fake_class_loss(d: Discriminator, fake_out: dict, fake_labels: jax.Array,
                    count: jax.Array | None = None) -> jax.Array:
    """Mean K-way cross-entropy of the fakes for their conditioning labels, over the fakes conditioned on a class
    (a fake conditioned on "no label", label K, has no class to be judged by); `count` as in `masked_mean`."""
    conditioned = fake_labels < d.num_classes
    return masked_mean(class_cross_entropy(d, fake_out, jnp.where(conditioned, fake_labels, 0)), conditioned, count)


def discriminator_losses(d: Discriminator, real_out: dict, fake_out: dict, labels: jax.Array,
                         label_mask: jax.Array, real_mask: jax.Array, fake_labels: jax.Array,
                         w: LossWeights, counts: StepCounts | None = None) -> tuple[jax.Array, dict]:
    """D's total loss and its terms: supervised CE on labeled real rows, real-vs-fake on every real row
    (`real_mask`) and every fake, and, for the acgan form, the class loss of the fakes.

    Every term is a sum over rows divided by a count, so with the whole step's `counts` (default: these rows'
    own) the loss of a micro-batch's rows and fakes is its share of the step's, and the shares sum to it."""
    if counts is None:
        counts = StepCounts.of(d.num_classes, label_mask, real_mask, fake_labels)
    sup = masked_mean(class_cross_entropy(d, real_out, labels), label_mask * real_mask, counts.labeled)
    log_real, _ = d.log_real_and_fake(real_out)
    _, log_fake = d.log_real_and_fake(fake_out)
    unsup = -masked_mean(log_real, real_mask, counts.real) - jnp.sum(log_fake) / counts.fakes
    terms = {"supervised": sup, "unsupervised": unsup}
    total = w.d_supervised * sup + w.d_unsupervised * unsup
    if d.form == ACGAN:
        terms["fake_class"] = fake_class_loss(d, fake_out, fake_labels, counts.conditioned)
        total = total + w.d_fake_class * terms["fake_class"]
    return total, terms


def class_feature_matching(real_feats: jax.Array, real_labels: jax.Array, labeled_mask: jax.Array,
                           fake_feats: jax.Array, fake_labels: jax.Array, num_classes: int) -> jax.Array:
    """Feature matching per class: the squared distance between the mean D features of the labeled real rows
    of class k and of the fakes conditioned on k, averaged over the classes the batch has on both sides.

    GAN-BERT's feature matching pulls the fakes' overall mean to the reals'; this pulls each class's fakes to
    where that class's real rows lie, the class-conditioned geometry AC-GAN-BERT is meant to learn."""
    real_onehot = jax.nn.one_hot(real_labels, num_classes) * labeled_mask.astype(jnp.float32)[:, None]  # [B, K]
    fake_onehot = jax.nn.one_hot(fake_labels, num_classes)  # [F, K]
    real_count, fake_count = real_onehot.sum(0), fake_onehot.sum(0)
    real_means = real_onehot.T @ real_feats / jnp.maximum(real_count, 1.0)[:, None]  # [K, H]
    fake_means = fake_onehot.T @ fake_feats / jnp.maximum(fake_count, 1.0)[:, None]
    present = ((real_count > 0) & (fake_count > 0)).astype(jnp.float32)
    per_class = jnp.mean(jnp.square(real_means - fake_means), axis=1)
    return jnp.sum(per_class * present) / jnp.maximum(jnp.sum(present), 1.0)


def generator_losses(d: Discriminator, fake_out: dict, fake_feats: jax.Array, real_feats: jax.Array,
                     real_mask: jax.Array, fake_labels: jax.Array, w: LossWeights, real_labels: jax.Array,
                     label_mask: jax.Array, real: jax.Array, fake: jax.Array) -> tuple[jax.Array, dict]:
    """G's total loss and its terms: fooling (non-saturating: -log p(real | fake)), GAN-BERT's feature
    matching (squared distance of the mean D features of real and fake rows), conditional class loss,
    feature matching per class (`class_feature_matching`, over the labeled real rows) and the same
    per-class matching on the real and fake embeddings themselves (`real`, `fake`: D's inputs).

    The last is what a class-faithful fake means to anyone reading the embeddings without D (a probe
    fit on real ones, the mode-collapse check): D's features and class head are D's own, and G can
    satisfy them with a class code real sentences do not share."""
    log_real, _ = d.log_real_and_fake(fake_out)
    fool = -jnp.mean(log_real)
    weights = real_mask.astype(jnp.float32)[:, None]
    real_mean = jnp.sum(real_feats * weights, axis=0) / jnp.maximum(jnp.sum(weights), 1.0)
    feature_matching = jnp.mean(jnp.square(real_mean - jnp.mean(fake_feats, axis=0)))
    cls = fake_class_loss(d, fake_out, fake_labels)
    class_fm = class_feature_matching(real_feats, real_labels, label_mask * real_mask, fake_feats, fake_labels,
                                      d.num_classes)
    class_em = class_feature_matching(real, real_labels, label_mask * real_mask, fake, fake_labels, d.num_classes)
    total = (w.g_fool * fool + w.g_feature_matching * feature_matching + w.g_class * cls
             + w.g_class_feature_matching * class_fm + w.g_class_embedding_matching * class_em)
    return total, {"fool": fool, "feature_matching": feature_matching, "class": cls,
                   "class_feature_matching": class_fm, "class_embedding_matching": class_em}
