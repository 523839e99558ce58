"""The sharded jit train step: one SPMD program over the whole mesh, GSPMD inserting the collectives.

Params and optimizer state stay in their rule-given shardings from step to step (donated, so
updated in place); batches are global arrays split over the data-parallel axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from jaxmt.data.sampling import TaskSampler
from jaxmt.parallel.host_data import global_train_batches, process_rows
from jaxmt.parallel.mesh import batch_sharding, replicated


class JitStep:
    """`batches(...)` builds a step's global batch; `step(state, batches, rng)` runs it.

    `make_step(axis_name)` builds the pure step `(state, batch, rng) -> (state, metrics)`; the jit path
    passes no axis name (GSPMD averages the gradients of a batch split over devices by itself).
    """

    def __init__(self, make_step: Callable[[str | None], Callable], mesh: Mesh, state_sharding: Any) -> None:
        self.mesh = mesh
        self.data_sharding = batch_sharding(mesh)
        self._step = jax.jit(
            make_step(None),
            in_shardings=(state_sharding, self.data_sharding, replicated(mesh)),
            out_shardings=(state_sharding, replicated(mesh)),
            donate_argnums=(0,),
        )

    def batches(self, splits: dict, sampler: TaskSampler, step: int, buckets, pad_id: int) -> dict:
        return global_train_batches(splits, sampler, step, buckets, pad_id, self.data_sharding)

    def rows(self, batch_size: int) -> slice:
        """The rows of a global batch this process builds."""
        return process_rows(batch_size, self.data_sharding)

    def put(self, local: Any, global_rows: int) -> Any:
        """This process's rows of a batch (a tree of [rows, ...] numpy arrays) as global arrays."""
        return jax.tree_util.tree_map(
            lambda v: jax.make_array_from_process_local_data(self.data_sharding, v, (global_rows,) + v.shape[1:]),
            local)

    def step(self, state: Any, batches: Any, rng: jax.Array) -> tuple[Any, dict]:
        return self._step(state, batches, rng)

    def lower(self, state: Any, batches: Any, rng: jax.Array):
        """The lowered step (for `.compile()`, its shardings and cost analysis)."""
        return self._step.lower(state, batches, rng)
