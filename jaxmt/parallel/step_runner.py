"""Picks the train step for config.parallel.mode: the sharded jit step, or the pmap step."""

from __future__ import annotations

from typing import Any

import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.errors import ConfigError
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.jit_step import JitStep
from jaxmt.parallel.pmap_step import PmapStep, check_pmap_mesh
from jaxmt.parallel.sharding_rules import check_heads

MODES = ("jit", "pmap")


def make_step_runner(config: ConfigDict, mesh: Mesh, model: MultitaskModel, tx: optax.GradientTransformation,
                     loss_weights: dict[str, float], state_sharding: Any) -> JitStep | PmapStep:
    """The step for `config`, checked against the mesh before anything is compiled."""
    check_heads(model.backbone.bert_config.num_attention_heads, mesh)
    per_task_grads = config.optim.gradient_surgery == "pcgrad"
    if config.parallel.mode == "jit":
        return JitStep(model, tx, loss_weights, per_task_grads, mesh, state_sharding)
    if config.parallel.mode == "pmap":
        check_pmap_mesh(mesh)
        return PmapStep(model, tx, loss_weights, per_task_grads)
    raise ConfigError(f"config.parallel.mode = {config.parallel.mode!r}; expected one of {MODES}")
