"""Shardings of the whole train state: params by the rules, optimizer state following the params.

Optimizer state is matched to params by tree path: an optax leaf whose key path ends with a
parameter's path and has its shape (AdamW's mu and nu, `.../mu/backbone/.../query/kernel`) takes
that parameter's sharding, so it never needs a rule of its own and any optax chain works. Leaves
that match no parameter (step counts, PCGrad's key and [T, T] cosines) are replicated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmt.parallel.mesh import replicated
from jaxmt.parallel.sharding_rules import BERT_RULES, Rule, param_shardings

ENCODER_PREFIX = "backbone/encoder/bert/"  # where the pretrained FlaxBert tree sits in the model's params


def _keys(path: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def follow_params(tree: Any, params: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings for `tree` (e.g. an optimizer state): each leaf takes the sharding of the parameter
    whose path is the longest suffix of its own path and whose shape it has, else replicated."""
    known = {}
    for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                      jax.tree_util.tree_leaves(shardings)):
        known[_keys(path)] = (tuple(leaf.shape), sharding)
    lengths = sorted({len(k) for k in known}, reverse=True)

    def one(path, leaf):
        keys = _keys(path)
        for n in (n for n in lengths if n <= len(keys)):
            shape, sharding = known.get(keys[-n:], (None, None))
            if shape == tuple(leaf.shape):
                return sharding
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Sequence[Rule] = BERT_RULES) -> Any:
    """Shardings for a TrainState (step replicated, params by rules, opt state following), or a params tree."""
    if not hasattr(abstract_state, "params"):
        return param_shardings(abstract_state, mesh, rules)
    params = param_shardings(abstract_state.params, mesh, rules)
    return abstract_state.replace(
        step=replicated(mesh),
        params=params,
        opt_state=follow_params(abstract_state.opt_state, abstract_state.params, params, mesh),
    )


def encoder_shardings(encoder_params: Any, mesh: Mesh, rules: Sequence[Rule] = BERT_RULES) -> Any:
    """Shardings for a pretrained FlaxBert params tree, as the same weights will have inside the model."""
    return param_shardings(encoder_params, mesh, rules, prefix=ENCODER_PREFIX)


def stacked_shardings(shardings: Any) -> Any:
    """PCGrad's per-task gradients [T, ...]: task axis unsharded, the rest as the parameter."""
    return jax.tree_util.tree_map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), shardings)
