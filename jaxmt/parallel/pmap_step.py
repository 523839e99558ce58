"""The jax.pmap train step: data parallelism with replicated params, gradients summed by lax.psum.

The same pure step as the jit path, built with `axis_name`, which makes the step
sum losses and gradients across devices (each device's loss its share of the batch's examples) before
the optimizer (and PCGrad) see them. Packed batches split into whole row groups, so a device
pools and scores its own examples from its own rows. The
state goes in and comes out unmapped (`in_axes=None`, `out_axes=None`): one replicated copy per
device, in the same layout as the jit path's replicated state, so checkpoints, evaluation and
logging read it unchanged. Each device draws its own dropout masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmt.errors import ConfigError
from jaxmt.parallel.host_data import process_block, process_rows

AXIS = "batch"


def check_pmap_mesh(mesh: Mesh) -> None:
    """pmap replicates params: the mesh must be data-parallel only."""
    model_parallel = {a: n for a, n in mesh.shape.items() if a != "data" and n > 1}
    if model_parallel:
        raise ConfigError(f"config.parallel.mode='pmap' is data parallelism only, but the mesh also splits over "
                          f"{model_parallel}; set config.mesh.shape so only 'data' is > 1, or use mode='jit'")


class PmapStep:
    """`put_host(batch)` gives this process's rows as [local devices, rows per device, ...]; `step` runs them."""

    def __init__(self, make_step: Callable[[str | None], Callable]) -> None:
        train_step = make_step(AXIS)

        def device_step(state: Any, batches: Any, rng: jax.Array):
            return train_step(state, batches, jax.random.fold_in(rng, jax.lax.axis_index(AXIS)))

        self._step = jax.pmap(device_step, axis_name=AXIS, in_axes=(None, 0, None), out_axes=None,
                              donate_argnums=(0,))
        self.local_devices = jax.local_device_count()
        # pmap's own device order: the rows each process feeds, and the sharding its unmapped outputs get.
        pmap_mesh = Mesh(np.asarray(jax.devices()), (AXIS,))
        self._row_sharding = NamedSharding(pmap_mesh, P(AXIS))
        self._replicated = NamedSharding(pmap_mesh, P())

    def put_host(self, batch: Any) -> Any:
        """This process's rows of a host batch (the same on every process) as [local devices, rows per device,
        ...]: pmap takes each process's part as it is."""
        n = self.local_devices

        def local(v):
            v = v[process_rows(len(v), self._row_sharding)]
            return v.reshape((n, v.shape[0] // n) + v.shape[1:])

        return jax.tree_util.tree_map(local, batch)

    @property
    def block(self) -> tuple[int, int]:
        """(i, n): this process builds the i-th of n equal blocks of a batch's leading axes (`put_block`)."""
        return process_block(self._row_sharding)

    def put_block(self, block: Any) -> Any:
        """This process's block of a batch (`block`) as [local devices, rows per device, ...]."""
        n = self.local_devices
        return jax.tree_util.tree_map(lambda v: v.reshape((n, v.shape[0] // n) + v.shape[1:]), block)

    def step(self, state: Any, batches: Any, rng: jax.Array) -> tuple[Any, dict]:
        if jax.tree_util.tree_leaves(state)[0].sharding != self._replicated:
            # A state from init or restore is replicated over the run's mesh; re-labelled once (same devices, no
            # copy) as pmap's outputs are, so the second step does not compile the step again.
            state = jax.device_put(state, self._replicated)
        return self._step(state, batches, rng)
