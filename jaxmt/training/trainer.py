"""The training loop: data, model and optimizer from the config; a sharded jitted step;
logging, evaluation, best and latest checkpoints, resumption.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict
from tqdm import tqdm

from jaxmt.checkpointing.manager import Checkpoints, abstract_like
from jaxmt.data.demo import DEMO_BANNER
from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.data.sources import load_splits, task_specs
from jaxmt.models.pretrained import load_pretrained
from jaxmt.parallel.mesh import batch_sharding, make_mesh, replicated
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, make_train_step

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


def write_json(path: str, payload: dict) -> None:
    """Writes through a temporary file, so a crash never leaves half a JSON file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the results."""
    setup.check_config(config)
    specs = task_specs(config)
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

    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        with open(config_path, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    start_step = checkpoints.latest_step()
    if start_step is not None:
        state = checkpoints.restore(abstract_like(abstract_state, state_sharding))
        log.info("resumed from %s at step %d", workdir, start_step)
    else:
        start_step = 0
        init = jax.jit(lambda p: init_state(model, tx, init_rng, p), out_shardings=state_sharding)
        state = init(pretrained.params)
    del pretrained

    data_sharding = batch_sharding(mesh)
    train_step = jax.jit(
        make_train_step(model, tx, setup.loss_weights(config, specs),
                        per_task_grads=config.optim.gradient_surgery == "pcgrad"),
        in_shardings=(state_sharding, data_sharding, replicated(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,),
    )
    predictor = Predictor(model, mesh, config.eval_batch_size, config.data.buckets, tokenizer.pad_token_id)
    sampler = TaskSampler({t: len(s.data) for t, s in train_split.items()},
                          {t: config.tasks[t].batch_size for t in train_split},
                          config.sampling, config.seed, config.num_steps)
    writer = MetricWriter(workdir)
    best = checkpoints.best_score()
    best_metrics: dict[str, float] = {}
    dev_metrics: dict[str, float] = {}
    compiled: set = set()
    task_names = sorted(specs)
    start_time = time.time()
    bar = tqdm(range(start_step, config.num_steps), initial=start_step, total=config.num_steps,
               desc=f"{tag}train", disable=jax.process_index() != 0, dynamic_ncols=True)
    for step in bar:
        batches = train_batches(train_split, sampler, step, config.data.buckets, tokenizer.pad_token_id)
        shape_key = tuple((t, b["input_ids"].shape) for t, b in sorted(batches.items()))
        if shape_key not in compiled:
            compiled.add(shape_key)
            log.info("compiling the train step for %s (compile #%d)", shape_key, len(compiled))
        state, metrics = train_step(state, jax.device_put(batches, data_sharding), step_rng)
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
            scalars = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
            scalars.update({f"train/{k}": v for k, v in _surgery_metrics(state.opt_state, task_names).items()})
            scalars["train/compiles"] = len(compiled)
            writer.write(done, scalars)
            bar.set_postfix({k.split("/", 2)[-1]: f"{v:.3f}" for k, v in scalars.items() if "/loss/" in k})
        eval_due = config.eval_every and done % config.eval_every == 0
        if eval_due or done == config.num_steps:
            dev_metrics, _ = predictor.evaluate(state.params, dev_split)
            writer.write(done, {f"dev/{k}": v for k, v in dev_metrics.items()})
            summary = "  ".join(f"{k} {v:.4f}" for k, v in dev_metrics.items())
            bar.write(f"{tag}step {done}: dev {summary}")
            if dev_metrics and (best is None or dev_metrics["mean"] > best):
                best, best_metrics = dev_metrics["mean"], dict(dev_metrics, step=done)
                checkpoints.save_best(done, state.params, best, dev_metrics)
        if done % config.checkpoint_every == 0 or done == config.num_steps:
            checkpoints.save(done, state)
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
    }
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "results.json"), results)
    return results
