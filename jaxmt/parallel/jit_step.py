"""The sharded jit train step: one SPMD program over the whole mesh, GSPMD inserting the collectives.

Params and optimizer state stay in their rule-given shardings from step to step (donated, so
updated in place); batches are global arrays split over the data-parallel axes.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.sharding import Mesh

from jaxmt.data.sampling import TaskSampler
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.host_data import global_train_batches
from jaxmt.parallel.mesh import batch_sharding, replicated
from jaxmt.parallel.state_sharding import stacked_shardings
from jaxmt.training.step import TrainState, make_train_step


class JitStep:
    """`batches(...)` builds a step's global batch; `step(state, batches, rng)` runs it."""

    def __init__(self, model: MultitaskModel, tx: optax.GradientTransformation, loss_weights: dict[str, float],
                 per_task_grads: bool, mesh: Mesh, state_sharding: Any) -> None:
        self.mesh = mesh
        self.data_sharding = batch_sharding(mesh)
        stacked = stacked_shardings(state_sharding.params) if per_task_grads else None
        self._step = jax.jit(
            make_train_step(model, tx, loss_weights, per_task_grads, stacked_grad_shardings=stacked),
            in_shardings=(state_sharding, self.data_sharding, replicated(mesh)),
            out_shardings=(state_sharding, replicated(mesh)),
            donate_argnums=(0,),
        )

    def batches(self, splits: dict, sampler: TaskSampler, step: int, buckets, pad_id: int) -> dict:
        return global_train_batches(splits, sampler, step, buckets, pad_id, self.data_sharding)

    def step(self, state: TrainState, batches: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        return self._step(state, batches, rng)

    def lower(self, state: TrainState, batches: dict, rng: jax.Array):
        """The lowered step (for `.compile()`, its shardings and cost analysis)."""
        return self._step.lower(state, batches, rng)
