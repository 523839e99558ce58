"""Pure train and predict steps; the trainer jits them with shardings over the mesh.

Per-task losses stay separate until the step combines them, so the same step serves a
weighted sum of losses and gradient surgery (one gradient per task, stacked on a leading
task axis, combined by the optimizer's first transform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.core.state import TrainState, guarded_update, replica_mean
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.jit_step import JitStep
from jaxmt.parallel.pmap_step import PmapStep
from jaxmt.parallel.state_sharding import stacked_shardings
from jaxmt.parallel.step_runner import make_step_runner
from jaxmt.training.losses import predict, task_loss
from jaxmt.training.setup import group_label, surgery_groups


def init_state(model: MultitaskModel, tx: optax.GradientTransformation, rng: jax.Array,
               encoder_params: dict | None) -> TrainState:
    return TrainState.create(model.init(rng, encoder_params), tx)


def make_train_step(
    model: MultitaskModel, tx: optax.GradientTransformation, loss_weights: dict[str, float], per_task_grads: bool,
    axis_name: str | None = None, stacked_grad_shardings=None, groups: tuple[tuple[str, ...], ...] | None = None,
) -> Callable:
    """Returns `train_step(state, batches, rng) -> (state, metrics)`.

    `batches` maps task name -> batch. With `per_task_grads`, each task's loss is
    differentiated on its own batch (one forward and one backward pass per task) and the
    gradients reach `tx` stacked as [T, ...] in sorted task order (laid out as
    `stacked_grad_shardings` when given). `groups` (`jaxmt.training.setup.surgery_groups`) pairs
    losses instead: the weighted losses of a group are summed and differentiated together, so `tx`
    gets one gradient a group, [G, ...] in the groups' order; None is a group per task. Under
    `jax.pmap`, `axis_name` averages losses and gradients over the devices before anything reads
    them, so every device applies the same update.
    """
    task_ids = {task: i for i, task in enumerate(sorted(model.specs))}
    mean = replica_mean(axis_name)

    def loss_of(params, task, batch, rng):
        outputs = model.outputs(params, task, batch, rng=rng, deterministic=False)
        return task_loss(model.specs[task], outputs, batch["labels"], batch["example_mask"])

    def train_step(state: TrainState, batches: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        tasks = sorted(batches)
        rngs = {t: jax.random.fold_in(rng, task_ids[t]) for t in tasks}
        metrics = {}

        def summed_loss(params, group):
            parts = {t: loss_of(params, t, batches[t], rngs[t]) for t in group}
            return sum(loss_weights[t] * parts[t] for t in group), parts

        if per_task_grads:
            losses, grads = {}, []
            for group in groups or tuple((t,) for t in tasks):
                if len(group) == 1:  # w * grad(loss), as before groups existed: bit-identical
                    t = group[0]
                    losses[t], g = mean(jax.value_and_grad(loss_of)(state.params, t, batches[t], rngs[t]))
                    g = jax.tree_util.tree_map(lambda x, w=loss_weights[t]: w * x, g)
                else:  # one backward pass for the group's summed loss
                    (_, parts), g = mean(jax.value_and_grad(summed_loss, has_aux=True)(state.params, group))
                    losses.update(parts)
                grads.append(g)
                metrics[f"grad_norm/{group_label(group)}"] = optax.global_norm(g)
            grads = jax.tree_util.tree_map(lambda *g: jnp.stack(g), *grads)
            if stacked_grad_shardings is not None:
                grads = jax.lax.with_sharding_constraint(grads, stacked_grad_shardings)
        else:
            (_, losses), grads = mean(jax.value_and_grad(summed_loss, has_aux=True)(state.params, tasks))
        metrics.update({f"loss/{t}": losses[t] for t in tasks})
        metrics["loss/total"] = sum(loss_weights[t] * losses[t] for t in tasks)
        new_state, guard_metrics = guarded_update(state, grads, tx, metrics["loss/total"])
        if not per_task_grads:
            metrics["grad_norm"] = guard_metrics["grad_norm"]
        metrics["nonfinite"] = guard_metrics["nonfinite"]
        metrics.update({f"nonfinite/{t}": ~jnp.isfinite(losses[t]) for t in tasks})
        return new_state, metrics

    return train_step


def multitask_step_runner(config: ConfigDict, mesh: Mesh, model: MultitaskModel, tx: optax.GradientTransformation,
                          loss_weights: dict[str, float], state_sharding: Any) -> JitStep | PmapStep:
    """The multitask train step on the path of `config.parallel.mode` (jit over the mesh, or pmap)."""
    per_task_grads = config.optim.gradient_surgery == "pcgrad"
    stacked = stacked_shardings(state_sharding.params) if per_task_grads and config.parallel.mode == "jit" else None
    groups = surgery_groups(config, model.specs) if per_task_grads else None
    return make_step_runner(
        config.parallel.mode, mesh,
        lambda axis_name: make_train_step(model, tx, loss_weights, per_task_grads, axis_name, stacked, groups),
        state_sharding)


def make_predict_step(model: MultitaskModel, task: str) -> Callable:
    """Returns `predict_step(params, batch) -> predictions [B]` for one task (no dropout)."""

    def predict_step(params: dict, batch: dict) -> jax.Array:
        return predict(model.specs[task], model.outputs(params, task, batch, deterministic=True))

    return predict_step
