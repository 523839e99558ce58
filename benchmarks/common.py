"""Pieces the benchmarks share: jaxmt's train step built as the trainer builds it, the encoder's FLOPs for MFU,
and the record of the machine a result was measured on (so every JSON says the same things about its
environment)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.host_data import put_global
from jaxmt.parallel.jit_step import JitStep
from jaxmt.parallel.mesh import make_mesh
from jaxmt.parallel.state_sharding import encoder_shardings
from jaxmt.training import setup
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, multitask_step_runner


@dataclasses.dataclass
class JaxmtTrain:
    """A built train step and its first state: what a benchmark times."""

    model: MultitaskModel
    mesh: Any
    runner: JitStep  # `multitask_step_runner`: jit over the mesh, state donated
    state: Any
    step_rng: jax.Array


def jaxmt_train(config: ConfigDict, pretrained, specs: dict, num_steps: int) -> JaxmtTrain:
    """Model, optimizer (schedule over `num_steps`), shardings, step runner and initial state from `config`, in
    the order `jaxmt.training.trainer` builds them."""
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    model = setup.build_model(config, pretrained.config, specs)
    tx = make_optimizer(config, num_steps, len(specs))
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    abstract_state = jax.eval_shape(lambda p: init_state(model, tx, init_rng, p), pretrained.params)
    state_sharding = setup.state_shardings(abstract_state, mesh)
    runner = multitask_step_runner(config, mesh, model, tx, setup.loss_weights(config, specs), state_sharding)
    init = jax.jit(lambda p: init_state(model, tx, init_rng, p), out_shardings=state_sharding)
    state = init(put_global(pretrained.params, encoder_shardings(pretrained.params, mesh)))
    return JaxmtTrain(model=model, mesh=mesh, runner=runner, state=state, step_rng=step_rng)


def train_run(train: JaxmtTrain) -> Callable[[Sequence], None]:
    """Runs host batches through jaxmt's donated step as the trainer does (put, step), blocking at the end."""
    holder = {"state": train.state}

    def run(items: Sequence) -> None:
        metrics = None
        for batches in items:
            holder["state"], metrics = train.runner.step(holder["state"], train.runner.put_host(batches),
                                                         train.step_rng)
        jax.block_until_ready((holder["state"].params, metrics))

    return run


def encoder_matmul_flops(bert_config, lengths: Sequence[int] | np.ndarray, training: bool) -> float:
    """Matmul FLOPs of the encoder on sequences of these lengths: the dense layers (query, key, value, attention
    output, the feed-forward pair) and attention's scores and mixing, each sequence at its own length; a
    training step is 3x the forward pass (the backward pass runs two matmuls for each forward one). Embeddings,
    LayerNorm, softmax and the task heads are left out, as MFU figures usually do (PaLM, appendix B)."""
    h, inter, layers = bert_config.hidden_size, bert_config.intermediate_size, bert_config.num_hidden_layers
    n = np.asarray(lengths, np.float64)
    forward = layers * (2 * n.sum() * (4 * h * h + 2 * h * inter) + 4 * (n * n).sum() * h)
    return float((3 if training else 1) * forward)


def torch_info(use_torch: bool, note: str | None, threads: int) -> dict:
    """The torch version and threads of the reference, or why it was skipped."""
    if not use_torch:
        return {"skipped": note}
    import torch

    return {"version": torch.__version__, "threads": torch.get_num_threads(), "set_num_threads": threads,
            "attention": "sdpa", "optimizer": "torch.optim.AdamW (foreach)"}


def environment(torch: dict) -> dict:
    """Backend, versions, cores, load and affinity at the end of a run (`torch`: from `torch_info`)."""
    return {
        "backend": jax.default_backend(), "jax": jax.__version__, "devices": jax.device_count(),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average_1m": round(os.getloadavg()[0], 2), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "torch": torch,
        "gpu": "not available in this run" if jax.default_backend() == "cpu" else jax.devices()[0].device_kind,
    }


def write_result(result: dict, path: Path) -> None:
    """Writes a benchmark's JSON to `path` (its folder made if missing) and prints it: the record and the console
    show the same text."""
    text = json.dumps(result, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
