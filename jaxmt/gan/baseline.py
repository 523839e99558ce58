"""The baseline of the sweep: plain fine-tuning (the multitask model, one task, its linear head) on the
labeled subset alone, with the same steps, batch size, optimizer and dev set as the GAN run.

The multitask trainer reads its training data from the config and has no hook for a subset, so this
builds its program from the same pieces (`make_train_step`, `TaskSampler`, `Predictor`) and runs it
through the shared loop.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxmt.core.rngs import stream_key
from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.errors import ConfigError
from jaxmt.gan.build import GanData, prepare_gan_run
from jaxmt.gan.semi_supervised import subset_split
from jaxmt.gan.trainer import GAN_FAULT_HINT
from jaxmt.training import loop, setup
from jaxmt.training.evaluation import Predictor
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, multitask_step_runner

log = logging.getLogger(__name__)


def train_baseline(config: ConfigDict, workdir: str, data: GanData | None = None) -> dict:
    """Fine-tunes encoder + linear head on the labeled subset of `config.gan.labeled_fraction`; returns results."""
    mesh, data, tag = prepare_gan_run(config, workdir, data, "the baseline")
    name = data.spec.name
    batch_size = config.tasks[name].batch_size
    if len(data.labeled) < batch_size:
        raise ConfigError(f"the labeled subset has {len(data.labeled)} examples, fewer than the batch size "
                          f"{batch_size}: raise gan.labeled_fraction or lower tasks.{name}.batch_size")
    labeled = {name: subset_split(data.train, data.labeled)}
    model = setup.build_model(config, data.pretrained.config, {name: data.spec})
    tx = make_optimizer(config, config.num_steps, 1)
    init_rng, dropout_rng = stream_key(config.seed, "init"), stream_key(config.seed, "dropout")
    init = lambda p: init_state(model, tx, init_rng, p)  # noqa: E731
    abstract = jax.eval_shape(init, data.pretrained.params)
    shardings = setup.state_shardings(abstract, mesh)
    runner = multitask_step_runner(config, mesh, model, tx, {name: 1.0}, shardings)
    sampler = TaskSampler({name: len(data.labeled)}, {name: batch_size}, "all", config.seed, config.num_steps)
    predictor = Predictor(model, mesh, config.eval_batch_size, config.data.buckets, data.pad_id)
    program = loop.Program(
        name="baseline", abstract_state=abstract, state_sharding=shardings,
        init=lambda: jax.jit(init, out_shardings=shardings)(data.pretrained.params),
        batch=lambda step: runner.put_host(train_batches(labeled, sampler, step, config.data.buckets, data.pad_id)),
        step=lambda state, b: runner.step(state, b, dropout_rng),
        evaluate=lambda state: {"accuracy": predictor.evaluate(state.params, {name: data.dev})[0][name]},
        best_metric="accuracy", fault_hint=GAN_FAULT_HINT, tag=tag,
        checkpoints=bool(config.gan.save_checkpoints))
    outcome = loop.run(program, config, workdir)
    dev_acc = outcome.dev["accuracy"] if outcome.dev else program.evaluate(outcome.state)["accuracy"]
    losses = outcome.values(f"loss/{name}")
    common = outcome.common_results(config)
    results = {
        "method": "baseline", "task": name, "demo_data": data.is_demo,
        "labeled_fraction": config.gan.labeled_fraction, "labeled_examples": int(len(data.labeled)),
        "train_examples": len(data.train.data),
        **{k: common[k] for k in ("steps", "resumed_from_step", "train_seconds", "seconds_per_step",
                                  "skipped_nonfinite_steps")},
        "batch_size": batch_size, "dev_accuracy": dev_acc, "dev_examples": len(data.dev.data),
        "first_loss": float(np.mean(losses[:5])) if losses else None,
        "last_loss": float(np.mean(losses[-5:])) if losses else None,
        "model": config.model.name,
    }
    loop.write_results(workdir, results)
    return results
