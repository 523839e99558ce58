"""Host arrays to global device arrays, each process touching only what its devices hold.

Training batches: every process computes the step's example indices (a pure function of the
step, see `jaxmt.data.sampling`), builds only the rows its own devices hold, and
`jax.make_array_from_process_local_data` joins the processes' rows into one global batch.
Pretrained weights: each device receives only its shard (`jax.make_array_from_callback`), so a
sharded model is never first materialised whole on any device.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxmt.data.sampling import TaskSampler
from jaxmt.data.tokenization import EncodedSplit, bucket_length, make_batch


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


def put_host_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """A host batch (the same on every process) as global arrays; each process gives only its rows."""
    size = len(next(iter(batch.values())))
    rows = process_rows(size, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v[rows], v.shape) for k, v in batch.items()}


def local_train_batches(splits: dict[str, EncodedSplit], sampler: TaskSampler, step: int, buckets, pad_id: int,
                        rows_of) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """This process's rows of step `step`'s batches (`rows_of(batch_size) -> slice`), and each task's
    global batch size. All tasks pad to the bucket of the longest example in the *global* batch, as
    `jaxmt.data.sampling.train_batches` does, so every process builds arrays of the same length."""
    chosen = {task: sampler.indices(task, step) for task in sampler.tasks_at(step)}
    length = bucket_length(max(int(splits[t].lengths[idx].max()) for t, idx in chosen.items()), buckets)
    local = {t: make_batch(splits[t], idx[rows_of(len(idx))], length, pad_id) for t, idx in chosen.items()}
    return local, {t: len(idx) for t, idx in chosen.items()}


def global_train_batches(splits: dict[str, EncodedSplit], sampler: TaskSampler, step: int, buckets, pad_id: int,
                         sharding: NamedSharding) -> dict[str, dict[str, jax.Array]]:
    """Step `step`'s batches as global arrays split by `sharding`, each process building its own rows."""
    local, sizes = local_train_batches(splits, sampler, step, buckets, pad_id,
                                       lambda size: process_rows(size, sharding))
    return {t: {k: jax.make_array_from_process_local_data(sharding, v, (sizes[t],) + v.shape[1:])
                for k, v in batch.items()}
            for t, batch in local.items()}
