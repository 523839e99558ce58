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

from jaxmt.core.state import TrainState, guarded_update
from jaxmt.models.multitask import MultitaskModel, is_packed
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
    """Returns `train_step(state, batches, rng) -> (state, metrics)`: `losses_and_grads`, then `guarded_update`.

    `batches` maps task name -> batch. `tx` gets the gradient of the weighted sum of losses, or, with
    `per_task_grads`, one gradient per task stacked as [T, ...] in sorted task order (laid out as
    `stacked_grad_shardings` when given). `groups` (`jaxmt.training.setup.surgery_groups`) pairs losses
    instead: the weighted losses of a group are summed and differentiated together, so `tx` gets one
    gradient a group, [G, ...] in the groups' order; None is a group per task. Under `jax.pmap`, `axis_name`
    sums losses and gradients over the devices (each device's loss counted as its share of the global
    examples) before anything reads them, so every device applies the same update.
    """
    losses_and_grads = make_losses_and_grads(model, loss_weights, per_task_grads, axis_name, groups)

    def train_step(state: TrainState, batches: dict, rng: jax.Array):
        losses, grads, metrics = losses_and_grads(state.params, batches, jax.random.fold_in(rng, state.step))
        if per_task_grads and stacked_grad_shardings is not None:
            grads = jax.lax.with_sharding_constraint(grads, stacked_grad_shardings)
        tasks = sorted(batches)
        metrics.update({f"loss/{t}": losses[t] for t in tasks})
        metrics["loss/total"] = sum(loss_weights[t] * losses[t] for t in tasks)
        new_state, guard_metrics = guarded_update(state, grads, tx, metrics["loss/total"])
        if not per_task_grads:
            metrics["grad_norm"] = guard_metrics["grad_norm"]
        metrics["nonfinite"] = guard_metrics["nonfinite"]
        metrics.update({f"nonfinite/{t}": ~jnp.isfinite(losses[t]) for t in tasks})
        return new_state, metrics

    return train_step


def make_losses_and_grads(model: MultitaskModel, loss_weights: dict[str, float], per_task_grads: bool,
                          axis_name: str | None = None,
                          groups: tuple[tuple[str, ...], ...] | None = None) -> Callable:
    """Returns `losses_and_grads(params, batches, rng) -> (losses {task: loss}, grads, metrics)`: the part of a
    train step before the update (see `make_train_step`), all-reduced over `axis_name` under pmap.

    Summed losses: packed batches of every task go through the encoder in one call
    (`MultitaskModel.packed_outputs`), so each parameter's gradient is one sum over the step's rows, reduced
    once; padded batches, whose lengths differ from step to step, one call a task. Per-task gradients
    (PCGrad): a forward and a backward pass per task (group) over its own rows, no more rows: one shared
    forward and a backward per task of all tasks' rows would cost T backward passes over every row.
    """
    task_ids = {task: i for i, task in enumerate(sorted(model.specs))}
    total = (lambda x: x) if axis_name is None else (lambda x: jax.lax.psum(x, axis_name))

    def share(mask):
        """This device's examples over all devices' (1 under jit, where the batch is global)."""
        count = jnp.sum(mask.astype(jnp.float32))
        return count / jnp.maximum(total(count), 1.0)

    def losses_of(params, batches, rng):
        """Each task's mean loss over its real examples (under pmap: this device's share of it)."""
        if all(is_packed(b) for b in batches.values()):
            outputs = model.packed_outputs(params, batches, rng=rng, deterministic=False)
        else:
            outputs = {t: model.outputs(params, t, b, rng=jax.random.fold_in(rng, task_ids[t]), deterministic=False)
                       for t, b in batches.items()}
        return {t: task_loss(model.specs[t], outputs[t], b["labels"], b["example_mask"]) * share(b["example_mask"])
                for t, b in batches.items()}

    def weighted(params, batches, rng):
        parts = losses_of(params, batches, rng)
        return sum(loss_weights[t] * parts[t] for t in parts), parts

    def losses_and_grads(params, batches: dict, rng: jax.Array):
        tasks = sorted(batches)
        if not per_task_grads:
            (_, losses), grads = total(jax.value_and_grad(weighted, has_aux=True)(params, batches, rng))
            return losses, grads, {}
        losses, grads, metrics = {}, [], {}
        for group in groups or tuple((t,) for t in tasks):
            own = {t: batches[t] for t in group}
            (_, parts), g = total(jax.value_and_grad(weighted, has_aux=True)(params, own, rng))
            losses.update(parts)
            grads.append(g)
            metrics[f"grad_norm/{group_label(group)}"] = optax.global_norm(g)
        return losses, jax.tree_util.tree_map(lambda *g: jnp.stack(g), *grads), metrics

    return losses_and_grads


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
