"""Fine-tuning and evaluating extractive QA (SQuAD format) from any pre-trained BERT.

The loop is small because the pieces are the project's: the mesh and rule-based shardings of
`jaxmt.parallel`, AdamW with warm-up from `jaxmt.training.optimizer`, a step-indexed data order from
`jaxmt.data.sampling` (so a resumed run sees the same batches), Orbax `Checkpoints` (latest for
resumption, best by dev F1), and the `MetricWriter`.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict
from tqdm import tqdm

from jaxmt.checkpointing.manager import Checkpoints
from jaxmt.checkpointing.workdir import RESULTS_FILE, write_json, write_run_config
from jaxmt.data.sampling import TaskSampler
from jaxmt.downstream.qa_model import SpanModel
from jaxmt.downstream.squad import QAExample, QAFeatures, decode_predictions, make_features, read_squad, squad_scores
from jaxmt.errors import ConfigError
from jaxmt.models.pretrained import load_pretrained
from jaxmt.parallel.host_data import process_rows, put_global
from jaxmt.parallel.mesh import batch_sharding, check_divisible, make_mesh, replicated
from jaxmt.parallel.sharding_rules import param_shardings
from jaxmt.parallel.state_sharding import state_shardings
from jaxmt.training.faults import PreemptionGuard, check_finite, save_or_stop
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.setup import DTYPES
from jaxmt.training.step import TrainState

log = logging.getLogger(__name__)
ENCODER_PREFIX = "encoder/bert/"  # where the FlaxBert tree sits in the QA params


def make_qa_train_step(model: SpanModel, tx: optax.GradientTransformation):
    """`train_step(state, batch, rng) -> (state, metrics)`; a non-finite loss or gradient leaves the state as it was."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        loss, grads = jax.value_and_grad(model.loss)(state.params, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_state = TrainState(step=state.step + 1, params=jax.tree_util.tree_map(keep, params, state.params),
                               opt_state=jax.tree_util.tree_map(keep, opt_state, state.opt_state))
        return new_state, {"loss": loss, "grad_norm": grad_norm, "nonfinite": ~finite}

    return train_step


def init_qa_state(model: SpanModel, tx: optax.GradientTransformation, rng: jax.Array,
                  encoder_params: dict | None) -> TrainState:
    params = model.init(rng, encoder_params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def global_batch(features: QAFeatures, rows: np.ndarray, sharding) -> dict[str, jax.Array]:
    """Windows `rows` as one global batch, each process building only the rows its devices hold."""
    local = features.take(rows[process_rows(len(rows), sharding)])
    return {k: jax.make_array_from_process_local_data(sharding, v, (len(rows),) + v.shape[1:])
            for k, v in local.items()}


class QAPredictor:
    """Start / end logits of every window, in batches of `batch_size` (the last one padded)."""

    def __init__(self, model: SpanModel, mesh: Mesh, batch_size: int) -> None:
        self.batch_size, self.sharding = batch_size, batch_sharding(mesh)
        self._step = jax.jit(lambda params, batch: model.logits(params, batch),
                             in_shardings=(None, self.sharding), out_shardings=replicated(mesh))

    def logits(self, params: dict, features: QAFeatures) -> tuple[np.ndarray, np.ndarray]:
        n = len(features)
        starts = np.zeros(features.input_ids.shape, np.float32)
        ends = np.zeros_like(starts)
        for lo in range(0, n, self.batch_size):
            rows = np.arange(lo, lo + self.batch_size) % n  # wrap around: the padding rows are real windows
            s, e = self._step(params, global_batch(features, rows, self.sharding))
            real = min(self.batch_size, n - lo)
            starts[lo:lo + real] = np.asarray(jax.device_get(s))[:real]
            ends[lo:lo + real] = np.asarray(jax.device_get(e))[:real]
        return starts, ends


def evaluate_qa(config: ConfigDict, predictor: QAPredictor, params: dict, examples: list[QAExample],
                features: QAFeatures) -> tuple[dict[str, float], dict[str, str]]:
    """SQuAD exact match and F1 (percent) of `params` on `examples`, and the predicted answers."""
    start, end = predictor.logits(params, features)
    spans = decode_predictions(examples, features, start, end, n_best=config.decode.n_best,
                               max_answer_length=config.decode.max_answer_length,
                               version_2=config.data.version_2_with_negative,
                               null_threshold=config.decode.null_threshold)
    answers = {qid: span.text for qid, span in spans.items()}
    return squad_scores(examples, answers, config.data.version_2_with_negative), answers


def _cap(value: int) -> int | None:
    return value if value and value > 0 else None


def check_qa_config(config: ConfigDict) -> None:
    if not config.data.train_file or not config.data.dev_file:
        raise ConfigError("set config.data.train_file and config.data.dev_file to SQuAD-format JSON files")
    if not 0 < config.data.stride < config.data.max_length:
        raise ConfigError(f"config.data.stride = {config.data.stride}: need 0 < stride < max_length "
                          f"({config.data.max_length})")
    if config.num_steps < 1 or config.batch_size < 1 or config.eval_batch_size < 1:
        raise ConfigError("config.num_steps, config.batch_size and config.eval_batch_size must be >= 1")
    if config.model.dtype not in DTYPES:
        raise ConfigError(f"config.model.dtype = {config.model.dtype!r}; expected one of {tuple(DTYPES)}")
    if config.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"config.on_nonfinite = {config.on_nonfinite!r}; expected 'stop' or 'skip'")


def load_features(config: ConfigDict, tokenizer) -> tuple[list[QAExample], QAFeatures, list[QAExample], QAFeatures]:
    v2, data = config.data.version_2_with_negative, config.data
    train = read_squad(os.path.expanduser(data.train_file), allow_impossible=v2,
                       max_examples=_cap(data.max_train_examples))
    dev = read_squad(os.path.expanduser(data.dev_file), allow_impossible=v2, max_examples=_cap(data.max_eval_examples))
    try:
        train_feats = make_features(train, tokenizer, data.max_length, data.stride, data.max_query_length)
        dev_feats = make_features(dev, tokenizer, data.max_length, data.stride, data.max_query_length, labeled=False)
    except ValueError as err:
        raise ConfigError(f"config.data: {err}") from None
    no_answer = int(np.sum(train_feats.start_positions == 0))
    log.info("squad train: %d questions -> %d windows (%d without the answer), questions skipped: %s; dev: %d "
             "questions -> %d windows, questions no window answers (still scored): %s", len(train), len(train_feats),
             no_answer, train_feats.skipped_counts(), len(dev), len(dev_feats), dev_feats.skipped_counts())
    return train, train_feats, dev, dev_feats


def train_and_evaluate_qa(config: ConfigDict, workdir: str) -> dict:
    """Fine-tunes span heads and encoder on `config.data.train_file`, scores `dev_file`; resumes from `workdir`."""
    check_qa_config(config)
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    check_divisible(config.batch_size, mesh, "config.batch_size")
    check_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
    pretrained = load_pretrained(config.model.name)
    if config.data.max_length > pretrained.config.max_position_embeddings:
        raise ConfigError(f"config.data.max_length = {config.data.max_length} exceeds the model's "
                          f"{pretrained.config.max_position_embeddings} positions")
    _, train_feats, dev, dev_feats = load_features(config, pretrained.tokenizer)
    if len(train_feats) < config.batch_size:
        raise ConfigError(f"{len(train_feats)} training windows, fewer than config.batch_size = {config.batch_size}")

    model = SpanModel.build(pretrained.config, DTYPES[config.model.dtype])
    tx = make_optimizer(config, config.num_steps, 1)
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    abstract_state = jax.eval_shape(lambda p: init_qa_state(model, tx, init_rng, p), pretrained.params)
    state_sharding = state_shardings(abstract_state, mesh)
    data_sharding = batch_sharding(mesh)
    train_step = jax.jit(make_qa_train_step(model, tx), in_shardings=(state_sharding, data_sharding, replicated(mesh)),
                         out_shardings=(state_sharding, replicated(mesh)), donate_argnums=(0,))

    write_run_config(workdir, config)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    init = jax.jit(lambda p: init_qa_state(model, tx, init_rng, p), out_shardings=state_sharding)
    state, start_step = checkpoints.restore_or_init(
        abstract_state, state_sharding,
        lambda params=pretrained.params: init(put_global(params, param_shardings(params, mesh, prefix=ENCODER_PREFIX))))
    del pretrained

    sampler = TaskSampler({"qa": len(train_feats)}, {"qa": config.batch_size}, "all", config.seed, config.num_steps)
    predictor = QAPredictor(model, mesh, config.eval_batch_size)
    writer = MetricWriter(workdir)
    best, best_metrics = checkpoints.best_score(), {}
    dev_metrics: dict[str, float] = {}
    answers: dict[str, str] = {}
    losses: list[float] = []
    skipped: list[int] = []
    start_time = time.time()
    bar = tqdm(range(start_step, config.num_steps), initial=start_step, total=config.num_steps, desc="squad",
               disable=jax.process_index() != 0, dynamic_ncols=True)
    try:
        with PreemptionGuard() as guard:
            for step in bar:
                state, metrics = train_step(
                    state, global_batch(train_feats, sampler.indices("qa", step), data_sharding), step_rng)
                done = step + 1
                stop_signal = guard.received
                log_due = done % config.log_every == 0 or done == config.num_steps
                eval_due = (config.eval_every and done % config.eval_every == 0) or done == config.num_steps
                save_due = done % config.checkpoint_every == 0 or done == config.num_steps or stop_signal
                if log_due or eval_due or save_due:
                    metrics = jax.device_get(metrics)
                    check_finite(done, metrics["nonfinite"], config.on_nonfinite, skipped,
                                 "non-finite QA loss or gradient")
                if log_due:
                    losses.append(float(metrics["loss"]))
                    writer.write(done, {"train/loss": metrics["loss"], "train/grad_norm": metrics["grad_norm"]})
                    bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
                if eval_due:
                    dev_metrics, answers = evaluate_qa(config, predictor, state.params, dev, dev_feats)
                    writer.write(done, {f"dev/{k}": v for k, v in dev_metrics.items()})
                    bar.write(f"step {done}: dev exact_match {dev_metrics['exact_match']:.2f}  "
                              f"f1 {dev_metrics['f1']:.2f}")
                    if best is None or dev_metrics["f1"] > best:
                        best, best_metrics = dev_metrics["f1"], dict(dev_metrics, step=done)
                        checkpoints.save_best(done, state.params, best, dev_metrics)
                save_or_stop(checkpoints, done, state, save_due, stop_signal, workdir)
    finally:
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()
    results = {
        "model": config.model.name,
        "train_file": config.data.train_file,
        "dev_file": config.data.dev_file,
        "train_windows": len(train_feats),
        "dev_questions": len(dev),
        "skipped_questions": {"train": train_feats.skipped_counts(), "dev": dev_feats.skipped_counts()},
        "steps": config.num_steps,
        "resumed_from_step": start_step,
        "train_seconds": round(time.time() - start_time, 1),
        "train_loss": losses,
        "dev": dev_metrics,
        "best_dev": best_metrics,
        "skipped_nonfinite_steps": skipped,
    }
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "predictions.json"), answers)
        write_json(os.path.join(workdir, RESULTS_FILE), results)
    return results

