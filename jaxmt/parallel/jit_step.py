"""The sharded jit train step: one SPMD program over the whole mesh, GSPMD inserting the collectives.

Params and optimizer state stay in their rule-given shardings from step to step (donated, so
updated in place); batches are global arrays split over the data-parallel axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from jaxmt.parallel.host_data import process_block, put_host_batch, put_process_block
from jaxmt.parallel.mesh import batch_sharding, replicated


class JitStep:
    """`put_host(batch)` makes a host batch (the same on every process) global; `step(state, batch, rng)` runs it.

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

    def put_host(self, batch: Any) -> Any:
        """A host batch (a tree of [rows, ...] numpy arrays, the same on every process) as global arrays split
        over the data axes; each process hands over only the rows its devices hold."""
        return put_host_batch(batch, self.data_sharding)

    @property
    def block(self) -> tuple[int, int]:
        """(i, n): this process builds the i-th of n equal blocks of a batch's leading axes (`put_block`)."""
        return process_block(self.data_sharding)

    def put_block(self, block: Any) -> Any:
        """This process's block of a batch (`block`) as global arrays split over the data axes."""
        return put_process_block(block, self.data_sharding, self.block[1])

    def step(self, state: Any, batches: Any, rng: jax.Array) -> tuple[Any, dict]:
        with jax.set_mesh(self.mesh):  # traced under the mesh: `constrain_batch` keeps activations batch-sharded
            return self._step(state, batches, rng)

    def lower(self, state: Any, batches: Any, rng: jax.Array):
        """The lowered step (for `.compile()`, its shardings and cost analysis)."""
        with jax.set_mesh(self.mesh):
            return self._step.lower(state, batches, rng)
