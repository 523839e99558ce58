"""The baseline of the sweep: plain fine-tuning (the multitask model, one task, its linear head) on the
labeled subset alone, with the same steps, batch size, optimizer and dev set as the GAN run.

The multitask trainer reads its training data from the config and has no hook for a subset, so
this loop reuses its pieces directly: `make_train_step`, `TaskSampler`, `Predictor`.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxmt.data.demo import DEMO_BANNER
from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.errors import ConfigError
from jaxmt.gan.build import GanData, check_gan_config, load_gan_data, make_mesh_for
from jaxmt.gan.runs import RunCheckpoints, check_gan_finite, write_results
from jaxmt.gan.semi_supervised import subset_split
from jaxmt.parallel.mesh import batch_sharding, replicated
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, make_train_step

log = logging.getLogger(__name__)


def train_baseline(config: ConfigDict, workdir: str, data: GanData | None = None) -> dict:
    """Fine-tunes encoder + linear head on the labeled subset of `config.gan.labeled_fraction`; returns results."""
    check_gan_config(config)
    if config.optim.gradient_surgery != "none":
        raise ConfigError("the baseline trains one task: set --config.optim.gradient_surgery=none")
    mesh = make_mesh_for(config)
    data = data or load_gan_data(config)
    name, tag = data.spec.name, f"[{DEMO_BANNER}] " if data.is_demo else ""
    batch_size = config.tasks[name].batch_size
    if len(data.labeled) < batch_size:
        raise ConfigError(f"the labeled subset has {len(data.labeled)} examples, fewer than the batch size "
                          f"{batch_size}: raise gan.labeled_fraction or lower tasks.{name}.batch_size")
    labeled = {name: subset_split(data.train, data.labeled)}
    model = setup.build_model(config, data.pretrained.config, {name: data.spec})
    tx = make_optimizer(config, config.num_steps, 1)
    init = lambda p: init_state(model, tx, jax.random.PRNGKey(config.seed), p)  # noqa: E731
    abstract = jax.eval_shape(init, data.pretrained.params)
    shardings = setup.state_shardings(abstract, mesh)
    step_fn = jax.jit(make_train_step(model, tx, {name: 1.0}, per_task_grads=False),
                      in_shardings=(shardings, batch_sharding(mesh), replicated(mesh)),
                      out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))
    os.makedirs(workdir, exist_ok=True)
    checkpoints = RunCheckpoints(config, workdir)
    state, start = checkpoints.restore_or_init(
        abstract, shardings, lambda: jax.jit(init, out_shardings=shardings)(data.pretrained.params))
    sampler = TaskSampler({name: len(data.labeled)}, {name: batch_size}, "all", config.seed, config.num_steps)
    predictor = Predictor(model, mesh, config.eval_batch_size, config.data.buckets, data.pad_id)
    writer, sharding = MetricWriter(workdir), batch_sharding(mesh)
    step_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    losses, skipped, step_seconds, dev_acc = [], [], [], None
    start_time = time.time()
    try:
        with checkpoints.preemption_guard() as guard:
            for step in range(start, config.num_steps):
                tick = time.time()
                batches = train_batches(labeled, sampler, step, config.data.buckets, data.pad_id)
                state, metrics = step_fn(state, jax.device_put(batches, sharding), step_rng)
                done = step + 1
                check_gan_finite(done, metrics["nonfinite"], config.on_nonfinite, skipped)
                losses.append(float(metrics[f"loss/{name}"]))
                step_seconds.append(time.time() - tick)
                if done % config.log_every == 0 or done == config.num_steps:
                    writer.write(done, {"train/loss": losses[-1]})
                if (config.eval_every and done % config.eval_every == 0) or done == config.num_steps:
                    dev_acc = predictor.evaluate(state.params, {name: data.dev})[0][name]
                    writer.write(done, {"dev/accuracy": dev_acc})
                    log.info("%sbaseline step %d: loss %.4f dev accuracy %.4f", tag, done, losses[-1], dev_acc)
                checkpoints.after_step(done, state, guard.received if guard else None)
        train_seconds = time.time() - start_time
        if dev_acc is None:
            dev_acc = predictor.evaluate(state.params, {name: data.dev})[0][name]
    finally:
        checkpoints.close()
        writer.close()
    results = {
        "method": "baseline", "task": name, "demo_data": data.is_demo,
        "labeled_fraction": config.gan.labeled_fraction, "labeled_examples": int(len(data.labeled)),
        "train_examples": len(data.train.data), "steps": config.num_steps, "resumed_from_step": start,
        "batch_size": batch_size, "dev_accuracy": dev_acc, "dev_examples": len(data.dev.data),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(float(np.median(step_seconds[1:])), 4) if len(step_seconds) > 1 else None,
        "first_loss": float(np.mean(losses[:5])) if losses else None,
        "last_loss": float(np.mean(losses[-5:])) if losses else None,
        "skipped_nonfinite_steps": skipped, "model": config.model.name,
    }
    write_results(workdir, results)
    return results
