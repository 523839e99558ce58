"""AC-GAN-BERT training: semi-supervised batches and the jitted GAN step, run by the shared loop
(`jaxmt.training.loop`); dev accuracy of D's class head, and the mode-collapse checks at the end
(logged and in results.json)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.core.rngs import stream_key
from jaxmt.data.sampling import eval_batches
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.errors import ConfigError
from jaxmt.gan.build import GanData, build_gan, generator_optimizer, prepare_gan_run
from jaxmt.gan.collapse import collapse_report
from jaxmt.gan.semi_supervised import build_sampler, semi_supervised_batch
from jaxmt.gan.step import GanModel, gan_state_shardings, init_gan_state, jit_gan_step, make_eval_fns
from jaxmt.parallel.host_data import put_host_batch
from jaxmt.parallel.mesh import batch_sharding
from jaxmt.training import loop
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.metrics import accuracy
from jaxmt.training.optimizer import make_optimizer

log = logging.getLogger(__name__)


def collapse_checks(config: ConfigDict, gan: GanModel, data: GanData, state: Any, dev_embeddings: np.ndarray,
                    generate, classify, png_path: str | None) -> dict[str, float]:
    """Real dev embeddings against class-conditional fakes (no dropout, fixed noise): fidelity, diversity, PCA;
    and `d_class_fidelity`, the share of fakes D's own class head gives their conditioning class (against the
    probe's `class_fidelity`: how far G's class code is D's alone)."""
    n = min(config.gan.collapse_examples, len(dev_embeddings))
    k, per_class = data.spec.num_classes, config.gan.collapse_fakes_per_class
    fake_y = np.repeat(np.arange(k), per_class).astype(np.int32)
    noise = gan.generator.sample_noise(stream_key(config.seed, "gan_noise"), len(fake_y))
    fake = generate(state.g.params, noise, fake_y)
    by_d = np.asarray(jax.device_get(classify(state.d.params, fake)))
    report = collapse_report(dev_embeddings[:n], data.dev.data.labels[:n], np.asarray(jax.device_get(fake)), fake_y,
                             k, png_path, title=f"{data.spec.name}, labeled fraction {config.gan.labeled_fraction:g}")
    return {**report, "d_class_fidelity": float(np.mean(by_d == fake_y))}


GAN_FAULT_HINT = ("Lower the learning rates (optim.learning_rate, gan.g_learning_rate) or set "
                  "--config.on_nonfinite=skip")


def split_outputs(fn: Callable, params: Any, split: EncodedSplit, batch_size: int, buckets, pad_id: int,
                  mesh: Mesh) -> np.ndarray:
    """`fn(params, batch)` over a whole split, rows back in the split's order ([N] or [N, D])."""
    sharding, out = batch_sharding(mesh), None
    for idx, batch in eval_batches(split, batch_size, buckets, pad_id):
        rows = np.asarray(jax.device_get(fn(params, put_host_batch(batch, sharding))))[: len(idx)]
        if out is None:
            out = np.zeros((len(split.data),) + rows.shape[1:], rows.dtype)
        out[idx] = rows
    return out


def train_gan(config: ConfigDict, workdir: str, data: GanData | None = None) -> dict:
    """Trains AC-GAN-BERT per `config` in `workdir` (resuming from its checkpoint if any); returns the results."""
    if config.get("gan", {}).get("method", "acgan") != "acgan":
        raise ConfigError(f"config.gan.method = {config.gan.method!r}: train_gan runs 'acgan'; use "
                          "jaxmt.gan.baseline.train_baseline (or python -m jaxmt.acgan) for the baseline")
    mesh, data, tag = prepare_gan_run(config, workdir, data, "AC-GAN-BERT")
    name = data.spec.name
    gan = build_gan(config, data.pretrained.config, data.spec)
    d_tx, g_tx = make_optimizer(config, config.num_steps, 1), generator_optimizer(config, config.num_steps)
    init_rng, dropout_rng = stream_key(config.seed, "init"), stream_key(config.seed, "dropout")
    init = lambda p: init_gan_state(gan, d_tx, g_tx, init_rng, p)  # noqa: E731
    abstract = jax.eval_shape(init, data.pretrained.params)
    shardings = gan_state_shardings(abstract, mesh)
    step_fn = jit_gan_step(gan, d_tx, g_tx, config.gan.update_order, mesh, shardings,
                           config.optim.accumulation_steps)
    embed, classify, generate = make_eval_fns(gan, mesh)
    sampler = build_sampler(config, len(data.train.data), data.labeled, config.tasks[name].batch_size)
    log.info("%sAC-GAN-BERT on %s: %.1f labeled rows per batch of %d (labeled_copies=%s), %s, %d steps", tag,
             name, sampler.labeled_per_batch, sampler.batch_size, config.gan.labeled_copies,
             "one fake a real row" if gan.fake_labels == "batch" else f"{gan.fake_batch_size} fakes", config.num_steps)
    sharding = batch_sharding(mesh)
    dev_embeddings: list[np.ndarray] = []

    def evaluate(state) -> dict[str, float]:
        """Dev accuracy of D's class head; the dev embeddings it read are kept for the collapse checks."""
        emb = split_outputs(embed, state.d.params, data.dev, config.eval_batch_size, config.data.buckets,
                            data.pad_id, mesh)
        dev_embeddings[:] = [emb]
        return {"accuracy": accuracy(np.asarray(jax.device_get(classify(state.d.params, emb))),
                                     data.dev.data.labels)}

    def batch(step: int) -> dict:
        idx, mask = sampler.indices(step)
        return put_host_batch(semi_supervised_batch(data.train, idx, mask, config.data.buckets, data.pad_id),
                              sharding)

    program = loop.Program(
        name="acgan", abstract_state=abstract, state_sharding=shardings,
        init=lambda: jax.jit(init, out_shardings=shardings)(data.pretrained.params),
        batch=batch, step=lambda state, b: step_fn(state, b, dropout_rng), evaluate=evaluate,
        best_metric="accuracy", best_params=lambda state: state.d.params, fault_hint=GAN_FAULT_HINT,
        tag=tag, checkpoints=bool(config.gan.save_checkpoints))
    outcome = loop.run(program, config, workdir)
    dev_acc = outcome.dev["accuracy"] if outcome.dev else evaluate(outcome.state)["accuracy"]
    collapse = collapse_checks(config, gan, data, outcome.state, dev_embeddings[0], generate, classify,
                               os.path.join(workdir, "pca.png") if jax.process_index() == 0 else None)
    writer = MetricWriter(workdir)
    writer.write(config.num_steps, {f"collapse/{k}": v for k, v in collapse.items()})
    writer.close()
    log.info("%smode collapse: class fidelity %.3f (probe on real %.3f), diversity fake/real %.2f (min class "
             "%.2f)", tag, collapse["class_fidelity"], collapse["probe_real_accuracy"],
             collapse["diversity_ratio"], collapse["diversity_ratio_min"])
    history = {k: outcome.values(k) for k in (outcome.history[0][1] if outcome.history else {})}
    common = outcome.common_results(config)
    results = {
        "method": "acgan", "form": config.gan.form, "loss_weights": dataclasses.asdict(gan.weights), "task": name,
        "demo_data": data.is_demo,
        "labeled_fraction": config.gan.labeled_fraction, "labeled_examples": int(len(data.labeled)),
        "train_examples": len(data.train.data), "labeled_per_class": data.class_counts(data.labeled),
        **{k: common[k] for k in ("steps", "resumed_from_step", "train_seconds", "seconds_per_step",
                                  "skipped_nonfinite_steps")},
        "batch_size": sampler.batch_size, "labeled_per_batch": round(sampler.labeled_per_batch, 2),
        "dev_accuracy": dev_acc,
        "dev_examples": len(data.dev.data), "collapse": collapse,
        "first_losses": {k: float(np.mean(v[:5])) for k, v in history.items()},
        "last_losses": {k: float(np.mean(v[-5:])) for k, v in history.items()},
        "model": config.model.name,
    }
    loop.write_results(workdir, results)
    return results


def train_gan_or_baseline(config: ConfigDict, workdir: str) -> dict:
    """`config.gan.method` decides: AC-GAN-BERT ('acgan') or the fine-tuned baseline ('baseline')."""
    from jaxmt.gan.baseline import train_baseline

    return (train_baseline if config.gan.method == "baseline" else train_gan)(config, workdir)
