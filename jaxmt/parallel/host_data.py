"""Host arrays to global device arrays, each process touching only what its devices hold.

Training batches: every process computes the step's host batch (a pure function of the step, see
`jaxmt.data.sampling`), hands over only the rows its own devices hold, and
`jax.make_array_from_process_local_data` joins the processes' rows into one global batch.
Pretrained weights: each device receives only its shard (`jax.make_array_from_callback`), so a
sharded model is never first materialised whole on any device.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding


def put_global(tree: Any, shardings: Any) -> Any:
    """Host numpy arrays (the same on every process) to global arrays with `shardings`, shard by shard."""
    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def process_rows(batch_size: int, sharding: NamedSharding) -> slice:
    """The rows of a [batch_size, ...] array that this process's devices hold under `sharding`."""
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((batch_size,)).values():
        rows = index[0]
        starts.append(rows.start or 0)
        stops.append(batch_size if rows.stop is None else rows.stop)
    rows = slice(min(starts), max(stops))
    held = set()
    for start, stop in zip(starts, stops):
        held.update(range(start, stop))
    if len(held) != rows.stop - rows.start:
        raise ValueError(f"this process's devices hold rows {sorted(held)} of the batch: not one contiguous block; "
                         "order the mesh so each process's devices are adjacent along the batch axes")
    return rows


def put_host_batch(batch: Any, sharding: NamedSharding) -> Any:
    """A host batch (a tree of [rows, ...] numpy arrays, the same on every process) as global arrays split along
    their leading axis by `sharding`; each process hands over only the rows its devices hold."""
    def one(v):
        v = np.asarray(v)
        return jax.make_array_from_process_local_data(sharding, v[process_rows(len(v), sharding)], v.shape)

    return jax.tree_util.tree_map(one, batch)
