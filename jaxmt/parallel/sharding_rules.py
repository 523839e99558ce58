"""Parameter shardings from regex rules on the parameter path: FSDP and Megatron tensor parallelism.

A rule maps a regex (searched in the '/'-joined path, e.g.
'backbone/encoder/bert/encoder/layer/3/attention/self/query/kernel') to one mesh axis (or None)
per array dimension; the first matching rule wins. Axes the mesh does not have are dropped, and so
are axes of size 1, so one rule set serves every mesh: ('data',) alone gives pure data parallelism.

BERT_RULES:
- 'tensor' (Megatron): query/key/value and the MLP's intermediate kernels are split by output
  column (whole attention heads, MLP hidden units), the attention-output and MLP-output kernels by
  input row, so each layer needs one all-reduce of activations forward and one backward.
- 'fsdp': every large matrix is split along the hidden dimension H (768 for BERT-base). H splits
  evenly over any power-of-two mesh, where the 30522-row vocabulary does not; FSDP's saving is the
  same whichever dimension is split.
- LayerNorms, the other biases and the task heads are small and stay replicated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmt.parallel.mesh import MeshError

Rule = tuple[str, tuple[str | None, ...]]

BERT_RULES: tuple[Rule, ...] = (
    (r"embeddings/\w+_embeddings/embedding$", (None, "fsdp")),
    (r"attention/self/(query|key|value)/kernel$", ("fsdp", "tensor")),
    (r"attention/self/(query|key|value)/bias$", ("tensor",)),
    (r"attention/output/dense/kernel$", ("tensor", "fsdp")),
    (r"intermediate/dense/kernel$", ("fsdp", "tensor")),
    (r"intermediate/dense/bias$", ("tensor",)),
    (r"layer/\d+/output/dense/kernel$", ("tensor", "fsdp")),
    (r"shared_\d+/kernel$", ("fsdp", None)),
)


class ShardingError(MeshError):
    """A parameter dimension that its rule's mesh axis does not divide, or a rule that does not fit."""


def path_name(path: Sequence[Any]) -> str:
    """'a/b/0/c' for a JAX key path (dict keys, attribute names and sequence indices)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def spec_for(name: str, shape: Sequence[int], mesh: Mesh, rules: Sequence[Rule] = BERT_RULES) -> P:
    """The PartitionSpec the first matching rule gives `name`, checked against `shape` and the mesh."""
    pattern, axes = next(((p, a) for p, a in rules if re.search(p, name)), ("<no rule: replicated>", ()))
    if len(axes) > len(shape):
        raise ShardingError(f"parameter {name} has shape {tuple(shape)}, but rule {pattern!r} shards "
                            f"{len(axes)} dimensions")
    spec = []
    for dim, (size, axis) in enumerate(zip(shape, axes)):
        if axis is None or axis not in mesh.axis_names or mesh.shape[axis] == 1:
            spec.append(None)
            continue
        if size % mesh.shape[axis]:
            raise ShardingError(
                f"parameter {name} {tuple(shape)}: dimension {dim} of size {size} is not divisible by mesh axis "
                f"'{axis}' of size {mesh.shape[axis]} (rule {pattern!r}); choose a config.mesh.shape whose "
                f"'{axis}' size divides {size}")
        spec.append(axis)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def param_shardings(params: Any, mesh: Mesh, rules: Sequence[Rule] = BERT_RULES, prefix: str = "") -> Any:
    """A NamedSharding for every leaf of `params` (arrays or ShapeDtypeStructs); `prefix` is prepended to paths."""
    def one(path, leaf):
        return NamedSharding(mesh, spec_for(prefix + path_name(path), leaf.shape, mesh, rules))

    return jax.tree_util.tree_map_with_path(one, params)


def check_heads(num_heads: int, mesh: Mesh) -> None:
    """Megatron splits attention by whole heads: 'tensor' must divide the number of heads."""
    size = mesh.shape.get("tensor", 1)
    if num_heads % size:
        raise ShardingError(f"the model has {num_heads} attention heads, not divisible by mesh axis 'tensor' of "
                            f"size {size}; tensor parallelism splits whole heads, so choose a 'tensor' size "
                            f"dividing {num_heads}")

