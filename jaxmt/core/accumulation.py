"""Gradient accumulation: one optimizer update from k micro-batches, equal to the update of their union.

`optim.accumulation_steps = k` splits each step's batch into k micro-batches inside the jitted step
(`micro_batches`) and runs the forward and backward pass over them one at a time (`accumulate`, a
`jax.lax.scan`), so activations are held for one micro-batch only; the summed gradients then take one
guarded optimizer update, so the NaN guard, gradient surgery and the metrics see the whole step.

Why not `optax.MultiSteps`: it updates every k-th call, so each call is a step of its own (its own guard,
its own metrics, a state written back k times) and PCGrad would project each micro-batch's task gradients
instead of the step's.

Exactness: the losses are means over masked examples (tokens, rows, packed segments), and a mean over a big
batch is not the mean of its micro-batches' means when they count different numbers of examples (padding
rows, packed rows of different fill). So a step's `grad_fn` returns each micro-batch's *share* of the big
batch's loss: its numerators (summed losses) divided by the denominators of the whole step, which are
counted from the batch's masks before the scan (they do not depend on the params). Shares, their gradients
and any additive statistics then sum to the big batch's loss, gradient and statistics exactly, up to the
order of float32 additions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def micro_batches(batch: Any, steps: int, groups: int | None = None) -> Any:
    """Every leaf [N, ...] -> [steps, N / steps, ...]: micro-batch j takes rows j, j + steps, j + 2 * steps, ...,
    or, with `groups`, the leading axis is that many equal blocks kept whole (packed row groups, whose token
    rows, example slots and segment tables each split along their leading axis) and micro-batch j takes
    blocks j, j + steps, ...

    Interleaved rather than contiguous: a batch split over devices along its leading axis keeps every
    micro-batch split over all of them (each device's rows are a contiguous block, so it holds a 1 / steps
    share of each micro-batch and the split moves no data).
    """
    def split(x: jax.Array) -> jax.Array:
        units = x.shape[0] if groups is None else groups
        if units % steps or x.shape[0] % units:
            raise ValueError(f"a batch of {units} {'rows' if groups is None else 'row groups'} does not split "
                             f"into {steps} equal micro-batches")
        per_unit = x.shape[0] // units
        blocks = x.reshape((units // steps, steps, per_unit) + x.shape[1:])
        return jnp.swapaxes(blocks, 0, 1).reshape((steps, x.shape[0] // steps) + x.shape[1:])

    return jax.tree_util.tree_map(split, batch)


def join_micro_batches(stacked: Any, steps: int) -> Any:
    """The inverse of `micro_batches` (without `groups`): every leaf [steps, M, ...] -> [steps * M, ...] in the
    batch's row order, for per-row outputs of the micro-batches (e.g. embeddings a later whole-batch loss reads)."""
    def join(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x, 0, 1).reshape((steps * x.shape[1],) + x.shape[2:])

    return jax.tree_util.tree_map(join, stacked)


def accumulate(grad_fn: Callable[[Any, Any, jax.Array], Any], params: Any, batch: Any, rng: jax.Array,
               steps: int, split: Callable[[Any, int], Any] = micro_batches,
               join: Callable[[Any, int], Any] | None = None) -> Any:
    """The sum over `steps` micro-batches of `grad_fn(params, micro_batch, rng_j)` (any tree: gradients, loss
    shares, additive statistics), `rng_j` being `rng` folded with the micro-batch index j. `split(batch, steps)`
    gives the micro-batches stacked on a leading axis (`micro_batches`, or a step's own for packed batches).

    With `join`, `grad_fn` returns a pair (summands, rows): the summands are summed as above, and the rows
    (per-row outputs, not summable) come back as `join(stacked rows, steps)`, e.g. `join_micro_batches`, which puts
    them in the batch's row order; the result is then the pair (sum, rows).

    `steps == 1` calls `grad_fn(params, batch, rng)` once, unchanged (no split, no fold), so a run without
    accumulation computes exactly what it did before accumulation existed.
    """
    if steps == 1:
        return grad_fn(params, batch, rng)
    stacked = split(batch, steps)
    first = jax.tree_util.tree_map(lambda x: x[0], stacked)
    shapes = jax.eval_shape(grad_fn, params, first, rng)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes if join is None else shapes[0])

    def add_micro_batch(total: Any, indexed: tuple[jax.Array, Any]) -> tuple[Any, Any]:
        index, micro = indexed
        out = grad_fn(params, micro, jax.random.fold_in(rng, index))
        summands, rows = (out, None) if join is None else out
        return jax.tree_util.tree_map(jnp.add, total, summands), rows

    total, rows = jax.lax.scan(add_micro_batch, zeros, (jnp.arange(steps), stacked))
    return total if join is None else (total, join(rows, steps))
