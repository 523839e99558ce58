"""Pure pre-training steps: per-task losses, the train step and the evaluation step.

Losses stay per task until the step weighs them (`config.tasks.<name>.weight`), so each task's
loss and accuracy is logged on its own. The trainer jits these with shardings over the mesh.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxmt.core.accumulation import accumulate
from jaxmt.core.state import TrainState, guarded_update, replica_mean
from jaxmt.pretraining.model import HierarchicalBert

LABELS = {"nsp": "nsp_labels", "bigram_shift": "bigram_labels"}
# The moved-token loss of bigram_head='token_labels': logged as a task of its own, weighed as bigram shift.
TOKEN_LABELS = "bigram_shift_tokens"


def task_count(task: str, batch: dict[str, jax.Array]) -> jax.Array:
    """How many predictions `task`'s loss averages over: masked tokens for MLM, examples otherwise (padding rows
    and slots weigh 0). It depends on the batch alone, so an accumulated step counts the whole step first."""
    if task == "mlm":
        return (batch["mlm_weights"] * batch["example_weights"][:, None]).sum()
    return batch["example_weights"].sum()


def output_tasks(model: HierarchicalBert) -> tuple[str, ...]:
    """The keys of the model's outputs: its tasks, and the moved-token loss with bigram_head='token_labels'."""
    tasks = tuple(task for task, _ in model.task_layers)
    return tasks + ((TOKEN_LABELS,) if "bigram_shift" in tasks and model.bigram_head == "token_labels" else ())


def task_statistics(outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> dict[str, dict[str, jax.Array]]:
    """Per task: summed cross-entropy, correct predictions and the number of predictions (`task_count`). The
    moved-token loss is summed over an example's tokens and counted per example; an example is correct when
    every one of its tokens is."""
    stats = {}
    for task, logits in outputs.items():
        logits = logits.astype(jnp.float32)
        if task == TOKEN_LABELS:  # which tokens moved: per-token logistic loss, summed over an example's tokens
            labels = batch["bigram_moved"]
            weights = (batch["attention_mask"] > 0) * batch["example_weights"][:, None]
            loss = optax.sigmoid_binary_cross_entropy(logits, labels) * weights  # scores are finite everywhere
            right = jnp.where(weights > 0, (logits > 0) == (labels > 0), True).all(-1)  # every token told right
            stats[task] = {"loss_sum": loss.sum(), "correct": (right * batch["example_weights"]).sum(),
                           "count": task_count(task, batch)}
            continue
        if task == "mlm":
            labels, weights = batch["mlm_ids"], batch["mlm_weights"] * batch["example_weights"][:, None]
        else:
            labels, weights = batch[LABELS[task]], batch["example_weights"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        stats[task] = {"loss_sum": (loss * weights).sum(),
                       "correct": ((logits.argmax(-1) == labels) * weights).sum(),
                       "count": task_count(task, batch)}
    return stats


def task_losses(outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Mean loss per task: MLM over the masked tokens only, NSP and bigram shift over the examples."""
    return {t: s["loss_sum"] / jnp.maximum(s["count"], 1.0) for t, s in task_statistics(outputs, batch).items()}


def init_params(model: HierarchicalBert, rng: jax.Array, batch: dict[str, jax.Array],
                encoder: dict | None = None) -> dict:
    """Random params, with the encoder's (embeddings, layers, pooler) replaced by `encoder` where given."""
    params = dict(model.init(rng, batch)["params"])
    for scope, value in (encoder or {}).items():
        if scope in params:
            params[scope] = value
    return params


def init_train_state(model: HierarchicalBert, tx: optax.GradientTransformation, rng: jax.Array,
                     batch: dict[str, jax.Array], encoder: dict | None = None) -> TrainState:
    return TrainState.create(init_params(model, rng, batch, encoder), tx)


def make_train_step(model: HierarchicalBert, tx: optax.GradientTransformation, weights: dict[str, float],
                    axis_name: str | None = None, accumulation_steps: int = 1) -> Callable:
    """Returns `train_step(state, batch, rng) -> (state, metrics)`: one update on the weighted sum of losses.

    A non-finite loss or gradient is never applied: the state stays as it was and `metrics['nonfinite']`
    tells the trainer. Under `jax.pmap`, `axis_name` averages losses and gradients over the devices.
    `accumulation_steps` > 1 runs the batch as that many micro-batches (`jaxmt.core.accumulation`), each loss
    divided by the whole step's counts, so the update is the whole batch's.
    """
    mean = replica_mean(axis_name)
    tasks = output_tasks(model)

    def shares(params, batch, rng, counts):
        """Gradient, weighted loss and per-task (loss, correct) of `batch` as shares of the step's (`counts`)."""
        def loss_fn(params):
            outputs = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
            stats = task_statistics(outputs, batch)
            losses = {t: s["loss_sum"] / counts[t] for t, s in stats.items()}
            total = sum(weights[t if t != TOKEN_LABELS else "bigram_shift"] * losses[t] for t in losses)
            return total, (losses, {t: s["correct"] / counts[t] for t, s in stats.items()})

        (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, total, aux

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        counts = {t: jnp.maximum(task_count(t, batch), 1.0) for t in tasks}
        grads, total, (losses, accuracies) = mean(accumulate(
            lambda params, micro, micro_rng: shares(params, micro, micro_rng, counts),
            state.params, batch, rng, accumulation_steps))
        new_state, metrics = guarded_update(state, grads, tx, total)
        metrics["loss/total"] = total
        metrics.update({f"loss/{t}": v for t, v in losses.items()})
        metrics.update({f"accuracy/{t}": v for t, v in accuracies.items()})
        return new_state, metrics

    return train_step


def make_eval_step(model: HierarchicalBert) -> Callable:
    """Returns `eval_step(params, batch) -> task_statistics` without dropout; the trainer sums over batches."""

    def eval_step(params: dict, batch: dict) -> dict[str, dict[str, jax.Array]]:
        return task_statistics(model.apply({"params": params}, batch, deterministic=True), batch)

    return eval_step
