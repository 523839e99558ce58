"""The AC-GAN-BERT training loop: semi-supervised batches, the jitted GAN step, dev accuracy of D's
class head, and the mode-collapse checks at the end (logged and in results.json)."""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxmt.data.demo import DEMO_BANNER
from jaxmt.errors import ConfigError
from jaxmt.gan.build import GanData, build_gan, check_gan_config, generator_optimizer, load_gan_data, make_mesh_for
from jaxmt.gan.collapse import collapse_report
from jaxmt.gan.runs import RunCheckpoints, check_gan_finite, split_outputs, write_results
from jaxmt.gan.semi_supervised import SemiSupervisedSampler, semi_supervised_batch
from jaxmt.gan.step import GanModel, gan_state_shardings, init_gan_state, jit_gan_step, make_eval_fns
from jaxmt.parallel.mesh import batch_sharding
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.metrics import accuracy
from jaxmt.training.optimizer import make_optimizer

log = logging.getLogger(__name__)


def collapse_checks(config: ConfigDict, gan: GanModel, data: GanData, g_params: dict, dev_embeddings: np.ndarray,
                    generate, png_path: str | None) -> dict[str, float]:
    """Real dev embeddings against class-conditional fakes (no dropout, fixed noise): fidelity, diversity, PCA."""
    n = min(config.gan.collapse_examples, len(dev_embeddings))
    k, per_class = data.spec.num_classes, config.gan.collapse_fakes_per_class
    fake_y = np.repeat(np.arange(k), per_class).astype(np.int32)
    noise = gan.generator.sample_noise(jax.random.PRNGKey(config.seed + 1), len(fake_y))
    fake = np.asarray(jax.device_get(generate(g_params, noise, fake_y)))
    return collapse_report(dev_embeddings[:n], data.dev.data.labels[:n], fake, fake_y, k, png_path,
                           title=f"{data.spec.name}, labeled fraction {config.gan.labeled_fraction:g}")


def train_gan(config: ConfigDict, workdir: str, data: GanData | None = None) -> dict:
    """Trains AC-GAN-BERT per `config` in `workdir` (resuming from its checkpoint if any); returns the results."""
    check_gan_config(config)
    if config.gan.method != "acgan":
        raise ConfigError(f"config.gan.method = {config.gan.method!r}: train_gan runs 'acgan'; use "
                          "jaxmt.gan.baseline.train_baseline (or python -m jaxmt.acgan) for the baseline")
    if config.optim.gradient_surgery != "none":
        raise ConfigError("AC-GAN-BERT trains one task: set --config.optim.gradient_surgery=none")
    mesh = make_mesh_for(config)
    data = data or load_gan_data(config)
    name, tag = data.spec.name, f"[{DEMO_BANNER}] " if data.is_demo else ""
    gan = build_gan(config, data.pretrained.config, data.spec)
    d_tx, g_tx = make_optimizer(config, config.num_steps, 1), generator_optimizer(config)
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    init = lambda p: init_gan_state(gan, d_tx, g_tx, init_rng, p)  # noqa: E731
    abstract = jax.eval_shape(init, data.pretrained.params)
    shardings = gan_state_shardings(abstract, mesh)
    step_fn = jit_gan_step(gan, d_tx, g_tx, config.gan.update_order, mesh, shardings)
    embed, classify, generate = make_eval_fns(gan, mesh)

    os.makedirs(workdir, exist_ok=True)
    checkpoints = RunCheckpoints(config, workdir)
    state, start = checkpoints.restore_or_init(
        abstract, shardings, lambda: jax.jit(init, out_shardings=shardings)(data.pretrained.params))
    sampler = SemiSupervisedSampler.build(len(data.train.data), data.labeled, config.tasks[name].batch_size,
                                          config.gan.min_labeled_per_batch, config.seed)
    log.info("%sAC-GAN-BERT on %s: %d labeled rows per batch of %d, %d fakes, steps %d..%d", tag, name,
             sampler.num_labeled, sampler.batch_size, gan.fake_batch_size, start, config.num_steps)
    writer, sharding = MetricWriter(workdir), batch_sharding(mesh)

    def evaluate(state) -> tuple[float, np.ndarray]:
        """Dev accuracy of D's class head, and the dev embeddings it read."""
        emb = split_outputs(embed, state.d.params, data.dev, config.eval_batch_size, config.data.buckets,
                            data.pad_id, mesh)
        return accuracy(np.asarray(jax.device_get(classify(state.d.params, emb))), data.dev.data.labels), emb

    history: dict[str, list[float]] = {}
    skipped: list[int] = []
    dev_acc = None
    start_time, step_seconds = time.time(), []
    try:
        with checkpoints.preemption_guard() as guard:
            for step in range(start, config.num_steps):
                tick = time.time()
                idx, mask = sampler.indices(step)
                batch = semi_supervised_batch(data.train, idx, mask, config.data.buckets, data.pad_id)
                state, metrics = step_fn(state, jax.device_put(batch, sharding), step_rng)
                done = step + 1
                check_gan_finite(done, metrics["nonfinite"], config.on_nonfinite, skipped)
                values = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "nonfinite"}
                step_seconds.append(time.time() - tick)
                for key, value in values.items():
                    history.setdefault(key, []).append(value)
                if done % config.log_every == 0 or done == config.num_steps:
                    writer.write(done, {f"train/{k}": v for k, v in values.items()})
                    log.info("%sstep %d: d/supervised %.4f d/unsupervised %.4f g/loss %.4f", tag, done,
                             values["d/supervised"], values["d/unsupervised"], values["g/loss"])
                if (config.eval_every and done % config.eval_every == 0) or done == config.num_steps:
                    dev_acc, dev_emb = evaluate(state)
                    writer.write(done, {"dev/accuracy": dev_acc})
                    log.info("%sstep %d: dev accuracy %.4f", tag, done, dev_acc)
                checkpoints.after_step(done, state, guard.received if guard else None)
        train_seconds = time.time() - start_time
        if dev_acc is None:  # resumed at the last step: nothing left to train
            dev_acc, dev_emb = evaluate(state)
        collapse = collapse_checks(config, gan, data, state.g.params, dev_emb, generate,
                                   os.path.join(workdir, "pca.png"))
        writer.write(config.num_steps, {f"collapse/{k}": v for k, v in collapse.items()})
        log.info("%smode collapse: class fidelity %.3f (probe on real %.3f), diversity fake/real %.2f (min class "
                 "%.2f)", tag, collapse["class_fidelity"], collapse["probe_real_accuracy"],
                 collapse["diversity_ratio"], collapse["diversity_ratio_min"])
    finally:
        checkpoints.close()
        writer.close()
    results = {
        "method": "acgan", "form": config.gan.form, "task": name, "demo_data": data.is_demo,
        "labeled_fraction": config.gan.labeled_fraction, "labeled_examples": int(len(data.labeled)),
        "train_examples": len(data.train.data), "labeled_per_class": data.class_counts(data.labeled),
        "steps": config.num_steps, "resumed_from_step": start, "batch_size": sampler.batch_size,
        "labeled_per_batch": sampler.num_labeled, "dev_accuracy": dev_acc, "dev_examples": len(data.dev.data),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(float(np.median(step_seconds[1:])), 4) if len(step_seconds) > 1 else None,
        "collapse": collapse, "skipped_nonfinite_steps": skipped,
        "first_losses": {k: float(np.mean(v[:5])) for k, v in history.items()},
        "last_losses": {k: float(np.mean(v[-5:])) for k, v in history.items()},
        "model": config.model.name,
    }
    write_results(workdir, results)
    return results
