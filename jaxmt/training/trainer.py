"""The training loop: data, model and optimizer from the config; a sharded jitted step;
logging, evaluation, best and latest checkpoints, resumption.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict
from tqdm import tqdm

from jaxmt.checkpointing.manager import Checkpoints
from jaxmt.checkpointing.workdir import RESULTS_FILE, write_json, write_run_config
from jaxmt.data.demo import DEMO_BANNER
from jaxmt.data.sampling import TaskSampler
from jaxmt.data.sources import load_splits, task_specs
from jaxmt.models.pretrained import load_pretrained
from jaxmt.parallel import distributed
from jaxmt.parallel.host_data import put_global
from jaxmt.parallel.mesh import make_mesh
from jaxmt.parallel.state_sharding import encoder_shardings
from jaxmt.parallel.step_runner import make_step_runner
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor
from jaxmt.training.faults import PreemptionGuard, check_finite, save_or_stop
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state

log = logging.getLogger(__name__)


def _surgery_metrics(opt_state, task_names: list[str]) -> dict[str, float]:
    """PCGrad's conflict count and pairwise gradient cosines of the last step, if it is in the chain."""
    from jaxmt.optim.pcgrad import find_pcgrad_state

    state = find_pcgrad_state(opt_state)
    if state is None:
        return {}
    cosine = np.asarray(jax.device_get(state.cosine))
    out = {"pcgrad/conflicts": float(jax.device_get(state.num_conflicts))}
    for i, a in enumerate(task_names):
        for j in range(i + 1, len(task_names)):
            out[f"pcgrad/cos/{a}-{task_names[j]}"] = float(cosine[i, j])
    return out


def check_step_finite(step: int, metrics: dict, mode: str, skipped_steps: list[int]) -> None:
    """`faults.check_finite` on a multitask step's flags, naming the tasks whose loss was not finite."""
    flags = jax.device_get({k: v for k, v in metrics.items() if k.startswith("nonfinite")})
    tasks = [k.split("/", 1)[1] for k, v in flags.items() if "/" in k and v]
    what = f"non-finite loss in task {', '.join(tasks)}" if tasks else "non-finite gradient (all losses finite)"
    check_finite(step, flags["nonfinite"], mode, skipped_steps, what,
                 "Lower the learning rate, check the data, or set --config.on_nonfinite=skip to skip such steps")


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the results."""
    setup.check_config(config)
    specs = task_specs(config)
    distributed.initialize(config.parallel)  # before any JAX computation; a no-op for one process
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    setup.check_batches_fit(config, mesh)
    pretrained = load_pretrained(config.model.name)
    tokenizer = pretrained.tokenizer

    train_data = load_splits(config, specs, "train")
    dev_data = load_splits(config, specs, "dev")
    specs = {t: specs[t] for t in train_data}
    is_demo = any(d.is_demo for d in train_data.values())
    tag = f"[{DEMO_BANNER}] " if is_demo else ""
    train_split = setup.encode_splits(config, train_data, tokenizer)
    dev_split = setup.encode_splits(config, dev_data, tokenizer)

    model = setup.build_model(config, pretrained.config, specs)
    tx = make_optimizer(config, config.num_steps, len(specs))
    rng = jax.random.PRNGKey(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    abstract_state = jax.eval_shape(lambda p: init_state(model, tx, init_rng, p), pretrained.params)
    state_sharding = setup.state_shardings(abstract_state, mesh)
    runner = make_step_runner(config, mesh, model, tx, setup.loss_weights(config, specs), state_sharding)

    write_run_config(workdir, config)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    init = jax.jit(lambda p: init_state(model, tx, init_rng, p), out_shardings=state_sharding)
    state, start_step = checkpoints.restore_or_init(
        abstract_state, state_sharding,
        lambda params=pretrained.params: init(put_global(params, encoder_shardings(params, mesh))))
    del pretrained

    predictor = Predictor(model, mesh, config.eval_batch_size, config.data.buckets, tokenizer.pad_token_id)
    sampler = TaskSampler({t: len(s.data) for t, s in train_split.items()},
                          {t: config.tasks[t].batch_size for t in train_split},
                          config.sampling, config.seed, config.num_steps)
    writer = MetricWriter(workdir)
    best = checkpoints.best_score()
    best_metrics: dict[str, float] = {}
    dev_metrics: dict[str, float] = {}
    compiled: set = set()
    skipped_steps: list[int] = []
    task_names = sorted(specs)
    start_time = time.time()
    bar = tqdm(range(start_step, config.num_steps), initial=start_step, total=config.num_steps,
               desc=f"{tag}train", disable=jax.process_index() != 0, dynamic_ncols=True)
    pending = None  # (step, metrics) whose fault flags are still to be read, one step behind
    try:
        with PreemptionGuard() as guard:
            for step in bar:
                batches = runner.batches(train_split, sampler, step, config.data.buckets, tokenizer.pad_token_id)
                shape_key = tuple((t, b["input_ids"].shape) for t, b in sorted(batches.items()))
                if shape_key not in compiled:
                    compiled.add(shape_key)
                    log.info("compiling the train step for %s (compile #%d)", shape_key, len(compiled))
                state, metrics = runner.step(state, batches, step_rng)
                done = step + 1
                stop_signal = guard.received  # read once: a signal may land at any point below
                if pending is not None:  # reading the previous step's flags keeps one step in flight
                    check_step_finite(*pending, config.on_nonfinite, skipped_steps)
                pending = (done, metrics)
                log_due = done % config.log_every == 0 or done == config.num_steps
                eval_due = (config.eval_every and done % config.eval_every == 0) or done == config.num_steps
                save_due = done % config.checkpoint_every == 0 or done == config.num_steps or stop_signal
                if log_due or eval_due or save_due:  # these wait for the step anyway
                    check_step_finite(done, metrics, config.on_nonfinite, skipped_steps)
                    pending = None
                if log_due:
                    scalars = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()
                               if not k.startswith("nonfinite")}
                    scalars.update({f"train/{k}": v for k, v in _surgery_metrics(state.opt_state, task_names).items()})
                    scalars["train/compiles"] = len(compiled)
                    scalars["train/skipped_steps"] = len(skipped_steps)
                    writer.write(done, scalars)
                    bar.set_postfix({k.split("/", 2)[-1]: f"{v:.3f}" for k, v in scalars.items() if "/loss/" in k})
                if eval_due:
                    dev_metrics, _ = predictor.evaluate(state.params, dev_split)
                    writer.write(done, {f"dev/{k}": v for k, v in dev_metrics.items()})
                    summary = "  ".join(f"{k} {v:.4f}" for k, v in dev_metrics.items())
                    bar.write(f"{tag}step {done}: dev {summary}")
                    if dev_metrics and (best is None or dev_metrics["mean"] > best):
                        best, best_metrics = dev_metrics["mean"], dict(dev_metrics, step=done)
                        checkpoints.save_best(done, state.params, best, dev_metrics)
                save_or_stop(checkpoints, done, state, save_due, stop_signal, workdir)
    finally:
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()
    results = {
        "demo_data": is_demo,
        "data": {"source": config.data.source, "train_sizes": {t: len(d) for t, d in train_data.items()},
                 "skipped_rows": {t: len(d.skipped) for t, d in train_data.items()}},
        "model": config.model.name,
        "steps": config.num_steps,
        "resumed_from_step": start_step,
        "train_seconds": round(time.time() - start_time, 1),
        "dev": dev_metrics,
        "best_dev": best_metrics,
        "devices": mesh.size,
        "train_step_compiles": len(compiled),
        "skipped_nonfinite_steps": skipped_steps,
    }
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, RESULTS_FILE), results)
    return results
