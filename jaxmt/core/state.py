"""The train state and the one guarded update every train step ends with.

A NaN/Inf loss or gradient never reaches the params: the step keeps the old params and optimizer
state, still counts the step (so dropout keys and schedules move on), and reports the fault in
`metrics['nonfinite']` for the loop to stop or skip as configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the config: the data order follows `step`."""

    step: jax.Array
    params: Any
    opt_state: optax.OptState

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> TrainState:
        """The optimizer's update, unguarded; `guard` decides whether it is kept."""
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return TrainState(step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)


def is_finite(*values: jax.Array) -> jax.Array:
    """True when every value (losses, gradient norms) is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in values]))


def guard(finite: jax.Array, new: TrainState, old: TrainState) -> TrainState:
    """`new` if `finite`, else `old`'s params and optimizer state at `new`'s step."""
    keep = lambda a, b: jnp.where(finite, a, b)  # noqa: E731
    return TrainState(step=new.step, params=jax.tree_util.tree_map(keep, new.params, old.params),
                      opt_state=jax.tree_util.tree_map(keep, new.opt_state, old.opt_state))


def guarded_update(state: TrainState, grads: Any, tx: optax.GradientTransformation,
                   loss: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step kept only if `loss` and the gradients are finite; metrics grad_norm and nonfinite."""
    grad_norm = optax.global_norm(grads)
    finite = is_finite(loss, grad_norm)
    return guard(finite, state.apply_gradients(grads, tx), state), {"grad_norm": grad_norm, "nonfinite": ~finite}


def replica_mean(axis_name: str | None) -> Callable[[Any], Any]:
    """Averages a tree over the pmap devices named `axis_name`, or leaves it as it is (the jit path, where
    GSPMD averages a batch split over devices by itself)."""
    return (lambda x: x) if axis_name is None else (lambda x: jax.lax.pmean(x, axis_name))
