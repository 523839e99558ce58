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

from jaxmt.core.accumulation import accumulate, micro_batches
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
    accumulation_steps: int = 1,
) -> Callable:
    """Returns `train_step(state, batches, rng) -> (state, metrics)`: `losses_and_grads`, then `guarded_update`.

    `batches` maps task name -> batch. `tx` gets the gradient of the weighted sum of losses, or, with
    `per_task_grads`, one gradient per task stacked as [T, ...] in sorted task order (laid out as
    `stacked_grad_shardings` when given). `groups` (`jaxmt.training.setup.surgery_groups`) pairs losses
    instead: the weighted losses of a group are summed and differentiated together, so `tx` gets one
    gradient a group, [G, ...] in the groups' order; None is a group per task. Under `jax.pmap`, `axis_name`
    sums losses and gradients over the devices (each device's loss counted as its share of the global
    examples) before anything reads them, so every device applies the same update. `accumulation_steps` > 1
    runs each task's batch as that many micro-batches (`split_batches`) summed into the one update.
    """
    losses_and_grads = make_losses_and_grads(model, loss_weights, per_task_grads, axis_name, groups,
                                             accumulation_steps)

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


def split_batches(batches: dict[str, dict], steps: int) -> dict[str, dict]:
    """Each task's batch as `steps` micro-batches (`jaxmt.core.accumulation.micro_batches`): padded batches by
    rows, packed ones by whole row groups (an example's sequences and slots stay together)."""
    return {t: micro_batches(b, steps, b["example_segments"].shape[0] if is_packed(b) else None)
            for t, b in batches.items()}


def make_losses_and_grads(model: MultitaskModel, loss_weights: dict[str, float], per_task_grads: bool,
                          axis_name: str | None = None, groups: tuple[tuple[str, ...], ...] | None = None,
                          accumulation_steps: int = 1) -> Callable:
    """Returns `losses_and_grads(params, batches, rng) -> (losses {task: loss}, grads, metrics)`: the part of a
    train step before the update (see `make_train_step`), all-reduced over `axis_name` under pmap.

    Summed losses: packed batches of every task go through the encoder in one call
    (`MultitaskModel.packed_outputs`), so each parameter's gradient is one sum over the step's rows, reduced
    once; padded batches, whose lengths differ from step to step, one call a task. Per-task gradients
    (PCGrad): a forward and a backward pass per task (group) over its own rows, no more rows: one shared
    forward and a backward per task of all tasks' rows would cost T backward passes over every row.

    With `accumulation_steps` > 1 each micro-batch's losses are its share of the whole step's (its examples'
    summed loss over the step's example count), so the summed losses and gradients, per task or group too,
    are the whole step's; they are all-reduced once, after the micro-batches.
    """
    task_ids = {task: i for i, task in enumerate(sorted(model.specs))}
    total = (lambda x: x) if axis_name is None else (lambda x: jax.lax.psum(x, axis_name))

    def count(mask):
        return jnp.sum(mask.astype(jnp.float32))

    def losses_of(params, batches, rng, counts):
        """Each task's mean loss over its real examples as this (micro-)batch's share of it: over `counts`, the
        step's examples on all devices (1 under jit without accumulation, where the batch is the step's)."""
        if all(is_packed(b) for b in batches.values()):
            outputs = model.packed_outputs(params, batches, rng=rng, deterministic=False)
        else:
            outputs = {t: model.outputs(params, t, b, rng=jax.random.fold_in(rng, task_ids[t]), deterministic=False)
                       for t, b in batches.items()}
        return {t: task_loss(model.specs[t], outputs[t], b["labels"], b["example_mask"])
                * (count(b["example_mask"]) / counts[t]) for t, b in batches.items()}

    def weighted(params, batches, rng, counts):
        parts = losses_of(params, batches, rng, counts)
        return sum(loss_weights[t] * parts[t] for t in parts), parts

    def local_losses_and_grads(params, batches: dict, rng: jax.Array, counts: dict):
        """This device's (micro-)batch: losses and gradients (stacked per group for PCGrad), not all-reduced."""
        if not per_task_grads:
            (_, losses), grads = jax.value_and_grad(weighted, has_aux=True)(params, batches, rng, counts)
            return losses, grads
        losses, grads = {}, []
        for group in task_groups(batches):
            (_, parts), g = jax.value_and_grad(weighted, has_aux=True)(params, {t: batches[t] for t in group}, rng,
                                                                       counts)
            losses.update(parts)
            grads.append(g)
        return losses, jax.tree_util.tree_map(lambda *g: jnp.stack(g), *grads)

    def task_groups(batches: dict) -> tuple[tuple[str, ...], ...]:
        return groups or tuple((t,) for t in sorted(batches))

    def losses_and_grads(params, batches: dict, rng: jax.Array):
        counts = {t: jnp.maximum(total(count(b["example_mask"])), 1.0) for t, b in batches.items()}
        losses, grads = total(accumulate(lambda p, micro, r: local_losses_and_grads(p, micro, r, counts),
                                         params, batches, rng, accumulation_steps, split_batches))
        if not per_task_grads:
            return losses, grads, {}
        return losses, grads, {f"grad_norm/{group_label(group)}": optax.global_norm(
            jax.tree_util.tree_map(lambda g, i=i: g[i], grads)) for i, group in enumerate(task_groups(batches))}

    return losses_and_grads


def multitask_step_runner(config: ConfigDict, mesh: Mesh, model: MultitaskModel, tx: optax.GradientTransformation,
                          loss_weights: dict[str, float], state_sharding: Any) -> JitStep | PmapStep:
    """The multitask train step on the path of `config.parallel.mode` (jit over the mesh, or pmap)."""
    per_task_grads = config.optim.gradient_surgery == "pcgrad"
    stacked = stacked_shardings(state_sharding.params) if per_task_grads and config.parallel.mode == "jit" else None
    groups = surgery_groups(config, model.specs) if per_task_grads else None
    accumulation = config.optim.accumulation_steps
    return make_step_runner(
        config.parallel.mode, mesh,
        lambda axis_name: make_train_step(model, tx, loss_weights, per_task_grads, axis_name, stacked, groups,
                                          accumulation),
        state_sharding)


def make_predict_step(model: MultitaskModel, task: str, readout: Callable = predict) -> Callable:
    """Returns `predict_step(params, batch) -> readout(spec, outputs)` for one task (no dropout): by default the
    predictions [B] the dev metric scores."""

    def predict_step(params: dict, batch: dict) -> jax.Array:
        return readout(model.specs[task], model.outputs(params, task, batch, deterministic=True))

    return predict_step
