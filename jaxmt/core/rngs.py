"""A run's independent PRNG streams, all derived from `config.seed`.

Each stream is the root key folded with its own constant, so no two uses share a key: parameter
init, dropout (folded with the step, then the task or device), PCGrad's task orders, and the GAN's
noise. The data order is numpy's, seeded by `[seed, 2, task, epoch]` in `jaxmt.data.sampling`.
"""

from __future__ import annotations

import jax

STREAMS = {"init": 1, "dropout": 2, "pcgrad": 3, "gan_noise": 4}


def stream_key(seed: int, name: str) -> jax.Array:
    """The key of stream `name` (one of STREAMS) for `seed`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), STREAMS[name])
