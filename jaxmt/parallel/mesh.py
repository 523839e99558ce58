"""The device mesh and the shardings of batches and replicated state."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class MeshError(ValueError):
    """A mesh that does not fit the devices, or a batch that does not split over it."""


def mesh_shape(axes: Sequence[str], shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Resolves one -1 entry to 'the rest of the devices'; checks the product."""
    if len(axes) != len(shape):
        raise MeshError(f"mesh axes {tuple(axes)} and shape {tuple(shape)} differ in length")
    shape = list(shape)
    if shape.count(-1) > 1:
        raise MeshError(f"mesh shape {tuple(shape)}: at most one -1")
    known = math.prod(s for s in shape if s != -1)
    if known <= 0 or num_devices % known:
        raise MeshError(f"mesh shape {tuple(shape)} does not fit {num_devices} devices")
    shape = [num_devices // known if s == -1 else s for s in shape]
    if math.prod(shape) != num_devices:
        raise MeshError(f"mesh shape {tuple(shape)} uses {math.prod(shape)} devices, but there are {num_devices}")
    return tuple(shape)


def make_mesh(axes: Sequence[str], shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    resolved = mesh_shape(axes, shape, len(devices))
    return Mesh(np.asarray(devices).reshape(resolved), tuple(axes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every mesh axis: pure data parallelism."""
    return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    if batch_size % mesh.size:
        raise MeshError(f"{what} = {batch_size} is not divisible by the {mesh.size} data-parallel devices")
