"""Picks the train step for config.parallel.mode: the sharded jit step, or the pmap step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jax.sharding import Mesh

from jaxmt.errors import ConfigError
from jaxmt.parallel.jit_step import JitStep
from jaxmt.parallel.pmap_step import PmapStep, check_pmap_mesh

MODES = ("jit", "pmap")


def make_step_runner(mode: str, mesh: Mesh, make_step: Callable[[str | None], Callable],
                     state_sharding: Any) -> JitStep | PmapStep:
    """The step for `config.parallel.mode`, checked against the mesh before anything is compiled.

    `make_step(axis_name)` builds the pure train step; the pmap path passes its device axis name, so the
    step averages gradients over devices before the optimizer sees them.
    """
    if mode == "jit":
        return JitStep(make_step, mesh, state_sharding)
    if mode == "pmap":
        check_pmap_mesh(mesh)
        return PmapStep(make_step)
    raise ConfigError(f"config.parallel.mode = {mode!r}; expected one of {MODES}")
