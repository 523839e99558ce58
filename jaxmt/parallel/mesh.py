"""The device mesh, and which of its axes split the batch.

Axes are named by role: 'data' (pure data parallelism), 'fsdp' (data parallelism whose params
and optimizer state are also sharded, see `sharding_rules`) and 'tensor' (Megatron-style
model parallelism). The batch is split over every axis but 'tensor': the devices of one
tensor-parallel group work on the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MODEL_AXES = ("tensor",)  # axes whose devices see the same batch rows


class MeshError(ValueError):
    """A mesh that does not fit the devices, or a batch or parameter that does not split over it."""


def mesh_shape(axes: Sequence[str], shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Resolves one -1 entry to 'the rest of the devices'; checks the product."""
    axes, shape = tuple(axes), tuple(shape)
    if len(axes) != len(shape):
        raise MeshError(f"config.mesh.axes {axes} and config.mesh.shape {shape} differ in length")
    if len(set(axes)) != len(axes):
        raise MeshError(f"config.mesh.axes {axes} names an axis twice")
    if shape.count(-1) > 1:
        raise MeshError(f"config.mesh.shape {shape}: at most one -1 (= the rest of the devices)")
    if any(s == 0 or s < -1 for s in shape):
        raise MeshError(f"config.mesh.shape {shape}: sizes must be positive, or -1 for the rest")
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
        raise MeshError(f"config.mesh.shape {shape} over axes {axes} does not fit {num_devices} devices "
                        f"(jax.device_count()): it needs a multiple of {known}; make the sizes multiply to "
                        f"{num_devices}")
    resolved = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(resolved) != num_devices:
        raise MeshError(f"config.mesh.shape {shape} over axes {axes} does not fit {num_devices} devices "
                        f"(jax.device_count()): it uses {math.prod(resolved)}; put -1 on one axis or make the sizes "
                        f"multiply to {num_devices}")
    return resolved


def make_mesh(axes: Sequence[str], shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh over all devices (all processes'), laid out for the interconnect where JAX knows it."""
    devices = list(jax.devices() if devices is None else devices)
    resolved = mesh_shape(axes, shape, len(devices))
    try:
        grid = mesh_utils.create_device_mesh(resolved, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):  # a layout it cannot map: plain order is still correct
        # (AssertionError: TPU v4/v5p devices one a TensorCore, not a chip, as an AOT topology hands them out
        # unless asked for megacore; jaxmt.compile_report asks for megacore.)
        grid = np.asarray(devices).reshape(resolved)
    return Mesh(grid, tuple(axes))


def batch_axes(mesh: Mesh | jax.sharding.AbstractMesh) -> tuple[str, ...]:
    """The mesh axes the batch dimension is split over."""
    return tuple(a for a in mesh.axis_names if a not in MODEL_AXES)


def _auto_split_axes() -> tuple[str, ...]:
    """The current mesh's axes that GSPMD partitions (Auto, size > 1); none without a mesh (a plain jit) and none
    manual (shard_map, pmap: each device already holds its own share)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    return tuple(a for a, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
                 if mesh.shape[a] > 1 and kind == jax.sharding.AxisType.Auto)


def constrain_batch(x: jax.Array) -> jax.Array:
    """`x` with its leading (batch) axis split over the current mesh's data-parallel axes, as MaxText's logical
    activation constraints do. In a step traced under `jax.set_mesh` (`JitStep`) it keeps every layer's activations
    batch-sharded, so on an FSDP mesh GSPMD all-gathers the sharded weights rather than computing the MLP as
    tensor parallelism over whole-batch activations (which the compile report found: a 0.8 GB all-reduce a layer
    for BERT-base at 64 examples a device). A no-op where no mesh is set (a plain jit), inside shard_map or pmap
    (their axes are manual: each device already holds its own rows) or where the batch is not split."""
    split = _auto_split_axes()
    axes = tuple(a for a in batch_axes(jax.sharding.get_abstract_mesh()) if a in split)
    return jax.lax.with_sharding_constraint(x, P(axes)) if axes else x


def gather_weight(weight: jax.Array) -> jax.Array:
    """`weight` whole on every device (FSDP's gather), where the current mesh has an automatic axis to split.

    For the embedding tables: their hidden dimension is split over 'fsdp', and a lookup from such a table leaves
    GSPMD to gather each device's share of the hidden size for the whole global batch and then all-to-all the
    activations into the batch layout, traffic that grows with the batch (the FSDP collectives test). Gathering
    the table costs its size once, as every other FSDP weight does. A no-op without a mesh, or where every axis
    is manual (shard_map, pmap) or of size 1."""
    return jax.lax.with_sharding_constraint(weight, P()) if _auto_split_axes() else weight


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes, replicated over 'tensor'."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    size = data_parallel_size(mesh)
    if batch_size % size:
        raise MeshError(f"{what} = {batch_size} is not divisible by the {size} data-parallel devices "
                        f"(mesh axes {batch_axes(mesh)} of {dict(mesh.shape)})")
    if batch_size % jax.process_count():
        raise MeshError(f"{what} = {batch_size} is not divisible by the {jax.process_count()} processes")
