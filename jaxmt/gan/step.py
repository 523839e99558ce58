"""The GAN step: one jitted program that updates encoder+D and G, with gradients kept apart.

D's loss is a function of the encoder+D params alone (the fakes enter as constants through
`stop_gradient`), G's loss of G's params alone (D's params and the real embeddings enter as
constants), and each is differentiated only with respect to its own params and updated by its own
optax optimizer. So no term of G's loss can move D or the encoder, nor any term of D's loss G.

Gradient accumulation (`optim.accumulation_steps = k`) is exact, and costs no extra pass of the encoder:

- D's loss (and its statistics) is a sum over rows and fakes divided by counts (`StepCounts`). Divided by the
  whole step's counts, each micro-batch's loss (its real rows and its 1/k of the step's fakes) is its share of
  the step's loss, so the summed gradients are the whole batch's (`jaxmt.core.accumulation`). Only D's pass
  runs the encoder, one micro-batch at a time, forward and backward, as any accumulated step does.
- G's loss is not such a sum: feature matching compares whole-batch means (real vs fake D features, per class
  too), a nonlinear function of them, so a sum of micro-batch gradients would not be the batch's. But the
  encoder's embeddings enter G's loss as constants (no gradient reaches the encoder or D), and the rest of it
  is two small MLPs (G, D) over B real embeddings and F fakes. So the micro-batches' embeddings, which D's pass
  computes anyway, are kept ([B, D] floats: the step's rows in order) and G's loss runs once over the whole
  step, exactly as without accumulation: no linearization, no second pass.

The fakes D sees are G's for the whole step, drawn once before the micro-batches and split among them; the
step's noise and G's dropout are then those of k = 1. What differs with k > 1 is only the dropout masks of
the encoder and of D's pass over real rows (drawn per micro-batch, as in every accumulated trainer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxmt.core.accumulation import accumulate, join_micro_batches
from jaxmt.core.state import TrainState, guard, is_finite
from jaxmt.gan.losses import LossWeights, StepCounts, discriminator_losses, generator_losses, masked_mean
from jaxmt.gan.networks import Discriminator, Generator
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.mesh import batch_sharding, replicated
from jaxmt.parallel.state_sharding import state_shardings

UPDATES = ("simultaneous", "alternating")
FAKE_LABELS = ("uniform", "batch")  # G's conditioning labels: random classes | each real row's label (or "no label")


@flax.struct.dataclass
class GanState:
    """Two train states: `d` (params {'backbone', 'discriminator'}, one optimizer) and `g` (G's params)."""

    d: TrainState
    g: TrainState


@dataclasses.dataclass(frozen=True)
class GanModel:
    """The encoder (a one-task MultitaskModel, of which only the backbone is used), G, D and the loss weights."""

    encoder: MultitaskModel
    generator: Generator
    discriminator: Discriminator
    weights: LossWeights
    fake_batch_size: int
    fake_labels: str = "uniform"  # one of FAKE_LABELS

    def init(self, rng: jax.Array, encoder_params: dict | None) -> tuple[dict, dict]:
        """(encoder+D params, G params); `encoder_params` is a pretrained FlaxBert tree or None."""
        enc_rng, d_rng, g_rng = jax.random.split(rng, 3)
        backbone = self.encoder.init(enc_rng, encoder_params)["backbone"]
        return ({"backbone": backbone, "discriminator": self.discriminator.init(d_rng)},
                self.generator.init(g_rng))

    def real_embeddings(self, d_params: dict, batch: dict, rng: jax.Array | None, deterministic: bool) -> jax.Array:
        """The encoder's pooled sentence embeddings [B, D] of the batch's real sentences.

        Without the backbone's final dropout: D's input dropout is then the only one between an
        embedding and D, for real and fake rows alike (a second dropout on real rows alone would zero
        about twice as many of their features, a cue that tells real from fake), and a real row reaches
        D in training as the embedding evaluation reads, up to the encoder's internal dropout.
        """
        feats = self.encoder.features({"backbone": d_params["backbone"]}, batch, rng=rng, deterministic=deterministic,
                                      output_dropout=False)
        return feats[:, 0].astype(jnp.float32)

    def fake_inputs(self, rng: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Noise [F, noise_dim] and conditioning labels [F]: 'uniform', F = fake_batch_size random classes;
        'batch' (the AC-GAN-BERT authors' code), one fake a real row, conditioned on its label, an unlabeled
        row's on "no label" (label K, G's extra one-hot slot)."""
        noise_rng, label_rng = jax.random.split(rng)
        if self.fake_labels == "batch":
            labels = jnp.where(batch["label_mask"] > 0, batch["labels"], self.generator.num_classes)
            return self.generator.sample_noise(noise_rng, labels.shape[0]), labels.astype(jnp.int32)
        n = self.fake_batch_size
        return (self.generator.sample_noise(noise_rng, n),
                jax.random.randint(label_rng, (n,), 0, self.generator.num_classes))

    def _discriminate(self, d_params: dict, real: jax.Array, fake: jax.Array, rng: jax.Array):
        """D over real and fake rows concatenated in one batch; outputs and features split back."""
        out, feats = self.discriminator(d_params["discriminator"], jnp.concatenate([real, fake]), rng,
                                        deterministic=False)
        b = real.shape[0]
        head = lambda x: x[:b]  # noqa: E731
        tail = lambda x: x[b:]  # noqa: E731
        return (jax.tree_util.tree_map(head, out), feats[:b]), (jax.tree_util.tree_map(tail, out), feats[b:])

    def d_fakes(self, g_params: dict, batch: dict, rng: jax.Array, noise_rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The fakes D's loss reads (constants: G's output behind `stop_gradient`) and their labels, for the rows
        of `batch`; `rng` is D's (`d_loss`'s), of which the second split is G's dropout here."""
        _, g_rng, _ = jax.random.split(rng, 3)
        noise, fake_labels = self.fake_inputs(noise_rng, batch)
        fake = self.generator(g_params, noise, fake_labels, g_rng, deterministic=False)
        return jax.lax.stop_gradient(fake), fake_labels

    def step_counts(self, batch: dict, fake_labels: jax.Array) -> StepCounts:
        return StepCounts.of(self.discriminator.num_classes, batch["label_mask"], batch["example_mask"], fake_labels)

    def d_loss(self, d_params: dict, g_params: dict, batch: dict, rng: jax.Array, noise_rng: jax.Array):
        """D's loss; differentiable in `d_params` only (G's output is a constant here)."""
        fake, fake_labels = self.d_fakes(g_params, batch, rng, noise_rng)
        return self.d_loss_share(d_params, batch, fake, fake_labels, rng, self.step_counts(batch, fake_labels))

    def d_loss_share(self, d_params: dict, batch: dict, fake: jax.Array, fake_labels: jax.Array, rng: jax.Array,
                     counts: StepCounts):
        """D's loss over these real rows and fakes as their share of a step with `counts` (all of it when they are
        the whole step), its terms and statistics likewise; aux 'real' holds the rows' embeddings [B, D]."""
        enc_rng, _, d_rng = jax.random.split(rng, 3)
        real = self.real_embeddings(d_params, batch, enc_rng, deterministic=False)
        (real_out, _), (fake_out, _) = self._discriminate(d_params, real, fake, d_rng)
        total, terms = discriminator_losses(self.discriminator, real_out, fake_out, batch["labels"],
                                            batch["label_mask"], batch["example_mask"], fake_labels, self.weights,
                                            counts)
        log_real_on_real, _ = self.discriminator.log_real_and_fake(real_out)
        log_real_on_fake, _ = self.discriminator.log_real_and_fake(fake_out)
        correct = jnp.argmax(self.discriminator.class_logits(real_out), -1) == batch["labels"]
        stats = {"p_real_on_real": jnp.sum(jnp.exp(log_real_on_real)) / counts.rows,
                 "p_real_on_fake": jnp.sum(jnp.exp(log_real_on_fake)) / counts.fakes,
                 "labeled_accuracy": masked_mean(correct, batch["label_mask"] * batch["example_mask"],
                                                 counts.labeled)}
        return total, {"terms": terms, "stats": stats, "real": real}

    def g_loss(self, g_params: dict, d_params: dict, real: jax.Array, batch: dict, rng: jax.Array,
               noise_rng: jax.Array):
        """G's loss; differentiable in `g_params` only (D's params and the real embeddings are constants)."""
        d_params, real = jax.lax.stop_gradient((d_params, real))
        g_rng, d_rng = jax.random.split(rng)
        noise, fake_labels = self.fake_inputs(noise_rng, batch)
        fake = self.generator(g_params, noise, fake_labels, g_rng, deterministic=False)
        (_, real_feats), (fake_out, fake_feats) = self._discriminate(d_params, real, fake, d_rng)
        total, terms = generator_losses(self.discriminator, fake_out, fake_feats, real_feats,
                                        batch["example_mask"], fake_labels, self.weights, batch["labels"],
                                        batch["label_mask"], real, fake)
        return total, {"terms": terms}


def init_gan_state(gan: GanModel, d_tx: optax.GradientTransformation, g_tx: optax.GradientTransformation,
                   rng: jax.Array, encoder_params: dict | None) -> GanState:
    d_params, g_params = gan.init(rng, encoder_params)
    return GanState(d=TrainState.create(d_params, d_tx), g=TrainState.create(g_params, g_tx))


def make_gan_step(gan: GanModel, d_tx: optax.GradientTransformation, g_tx: optax.GradientTransformation,
                  update: str = "simultaneous", accumulation_steps: int = 1) -> Callable:
    """Returns `gan_step(state, batch, rng) -> (state, metrics)`.

    'simultaneous': both losses are taken at the step's starting params. 'alternating': D is
    updated first and G's loss reads the updated D (on the same real embeddings and noise).
    A non-finite loss or gradient leaves both states as they were and sets metrics['nonfinite'].
    `accumulation_steps` = k > 1 runs D's pass as k micro-batches of the batch's rows and fakes and G's loss
    once over the whole step (the module's docstring: why that is the whole batch's update).
    """
    if update not in UPDATES:
        raise ValueError(f"gan.update_order must be one of {UPDATES}, got {update!r}")

    def gan_step(state: GanState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.d.step)
        d_rng, g_rng, noise_rng = jax.random.split(rng, 3)
        fake, fake_labels = gan.d_fakes(state.g.params, batch, d_rng, noise_rng)
        counts = gan.step_counts(batch, fake_labels)

        def d_share(d_params, micro, micro_rng):
            """(D's loss share with its terms and statistics, its gradient), and the micro-batch's embeddings."""
            micro_batch, micro_fake, micro_fake_labels = micro
            (total, aux), grads = jax.value_and_grad(gan.d_loss_share, has_aux=True)(
                d_params, micro_batch, micro_fake, micro_fake_labels, micro_rng, counts)
            return (total, {"terms": aux["terms"], "stats": aux["stats"]}, grads), aux["real"]

        (d_total, d_aux, d_grads), real = accumulate(d_share, state.d.params, (batch, fake, fake_labels), d_rng,
                                                     accumulation_steps, join=join_micro_batches)
        new_d = state.d.apply_gradients(d_grads, d_tx)
        d_for_g = new_d.params if update == "alternating" else state.d.params
        (g_total, g_aux), g_grads = jax.value_and_grad(gan.g_loss, has_aux=True)(
            state.g.params, d_for_g, real, batch, g_rng, noise_rng)
        new_g = state.g.apply_gradients(g_grads, g_tx)

        d_norm, g_norm = optax.global_norm(d_grads), optax.global_norm(g_grads)
        finite = is_finite(d_total, g_total, d_norm, g_norm)
        new_state = GanState(d=guard(finite, new_d, state.d), g=guard(finite, new_g, state.g))
        metrics = {"d/loss": d_total, "g/loss": g_total, "d/grad_norm": d_norm, "g/grad_norm": g_norm,
                   "nonfinite": ~finite}
        metrics.update({f"d/{k}": v for k, v in d_aux["terms"].items()})
        metrics.update({f"d/{k}": v for k, v in d_aux["stats"].items()})
        metrics.update({f"g/{k}": v for k, v in g_aux["terms"].items()})
        return new_state, metrics

    return gan_step


def gan_state_shardings(abstract_state: GanState, mesh: Mesh) -> GanState:
    """Like the multitask trainer: encoder params by the sharding rules, D and G (no rule) replicated,
    optimizer states following their params."""
    return GanState(d=state_shardings(abstract_state.d, mesh), g=state_shardings(abstract_state.g, mesh))


def jit_gan_step(gan: GanModel, d_tx: optax.GradientTransformation, g_tx: optax.GradientTransformation,
                 update: str, mesh: Mesh, state_sharding: Any, accumulation_steps: int = 1) -> Callable:
    """The step jitted over the mesh: batch split over the data axes, state donated and kept in place."""
    return jax.jit(make_gan_step(gan, d_tx, g_tx, update, accumulation_steps),
                   in_shardings=(state_sharding, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(state_sharding, replicated(mesh)), donate_argnums=(0,))


def make_eval_fns(gan: GanModel, mesh: Mesh) -> tuple[Callable, Callable, Callable]:
    """Jitted, deterministic (no dropout): embed(d_params, batch) -> real embeddings [B, D],
    classify(d_params, embeddings) -> D's class ids [N], generate(g_params, noise, labels) -> fakes [F, D].
    Dev accuracy and the mode-collapse checks share one pass of the encoder over the dev set."""
    rep = replicated(mesh)

    def embed(d_params, batch):
        return gan.real_embeddings(d_params, batch, None, True)

    def classify(d_params, embeddings):
        outputs, _ = gan.discriminator(d_params["discriminator"], embeddings)
        return jnp.argmax(gan.discriminator.class_logits(outputs), axis=-1).astype(jnp.int32)

    def generate(g_params, noise, labels):
        return gan.generator(g_params, noise, labels)

    return (jax.jit(embed, in_shardings=(None, batch_sharding(mesh)), out_shardings=rep),
            jax.jit(classify, out_shardings=rep), jax.jit(generate, out_shardings=rep))
