"""Fine-tuning and evaluating extractive QA (SQuAD format) from any pre-trained BERT.

What is QA's own: span heads, windowed features and SQuAD scoring; the rest is the project's: the mesh
and rule-based shardings of `jaxmt.parallel`, AdamW with warm-up from `jaxmt.training.optimizer`, a
step-indexed data order from `jaxmt.data.sampling` (so a resumed run sees the same batches), and the
shared loop of `jaxmt.training.loop` (checkpoints, best by dev F1, logging, preemption).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.checkpointing.workdir import write_json
from jaxmt.config_checks import check_accumulation, check_model_options, one_of
from jaxmt.core.accumulation import accumulate
from jaxmt.core.rngs import stream_key
from jaxmt.core.state import TrainState, guarded_update, replica_mean
from jaxmt.data.sampling import TaskSampler
from jaxmt.downstream.qa_model import SpanModel
from jaxmt.downstream.squad import QAExample, QAFeatures, decode_predictions, make_features, read_squad, squad_scores
from jaxmt.errors import ConfigError
from jaxmt.models.options import EncoderOptions
from jaxmt.models.pretrained import load_pretrained
from jaxmt.parallel import distributed
from jaxmt.parallel.host_data import put_global, put_host_batch
from jaxmt.parallel.mesh import batch_sharding, check_divisible, data_parallel_size, make_mesh, replicated
from jaxmt.parallel.sharding_rules import check_heads, param_shardings
from jaxmt.parallel.state_sharding import state_shardings
from jaxmt.parallel.step_runner import make_step_runner
from jaxmt.training import loop
from jaxmt.training.optimizer import make_optimizer

log = logging.getLogger(__name__)
ENCODER_PREFIX = "encoder/bert/"  # where the FlaxBert tree sits in the QA params


def make_qa_train_step(model: SpanModel, tx: optax.GradientTransformation, axis_name: str | None = None,
                       accumulation_steps: int = 1):
    """`train_step(state, batch, rng) -> (state, metrics)`; a non-finite loss or gradient leaves the state as it
    was. Under `jax.pmap`, `axis_name` averages the loss and gradients over the devices. `accumulation_steps` > 1
    runs the batch as that many equal micro-batches (`jaxmt.core.accumulation`): every window counts once, so
    each micro-batch's mean loss divided by their number is its share of the whole batch's mean."""
    mean = replica_mean(axis_name)

    def share(params, batch, rng):
        loss, grads = jax.value_and_grad(model.loss)(params, batch, rng)
        if accumulation_steps == 1:
            return loss, grads
        return jax.tree_util.tree_map(lambda x: x / accumulation_steps, (loss, grads))

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        loss, grads = mean(accumulate(share, state.params, batch, rng, accumulation_steps))
        new_state, metrics = guarded_update(state, grads, tx, loss)
        return new_state, {"loss": loss, **metrics}

    return train_step


def init_qa_state(model: SpanModel, tx: optax.GradientTransformation, rng: jax.Array,
                  encoder_params: dict | None) -> TrainState:
    return TrainState.create(model.init(rng, encoder_params), tx)


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
            s, e = self._step(params, put_host_batch(features.take(rows), self.sharding))
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
    check_model_options(config.model)
    one_of(config.on_nonfinite, ("stop", "skip"), "on_nonfinite")


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
    distributed.initialize(config.parallel)  # before any JAX computation; a no-op for one process
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    check_divisible(config.batch_size, mesh, "config.batch_size")
    check_accumulation(config.batch_size, config.optim.accumulation_steps, data_parallel_size(mesh), "batch_size")
    check_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
    loop.prepare_workdir(config, workdir)
    pretrained = load_pretrained(config.model.name)
    check_heads(pretrained.config.num_attention_heads, mesh)
    if config.data.max_length > pretrained.config.max_position_embeddings:
        raise ConfigError(f"config.data.max_length = {config.data.max_length} exceeds the model's "
                          f"{pretrained.config.max_position_embeddings} positions")
    _, train_feats, dev, dev_feats = load_features(config, pretrained.tokenizer)
    if len(train_feats) < config.batch_size:
        raise ConfigError(f"{len(train_feats)} training windows, fewer than config.batch_size = {config.batch_size}")

    model = SpanModel.build(pretrained.config, EncoderOptions.from_config(config.model))
    tx = make_optimizer(config, config.num_steps, 1)
    init_rng, dropout_rng = stream_key(config.seed, "init"), stream_key(config.seed, "dropout")
    abstract_state = jax.eval_shape(lambda p: init_qa_state(model, tx, init_rng, p), pretrained.params)
    state_sharding = state_shardings(abstract_state, mesh)
    accumulation = config.optim.accumulation_steps
    runner = make_step_runner(config.parallel.mode, mesh,
                              lambda axis: make_qa_train_step(model, tx, axis, accumulation), state_sharding)
    init = jax.jit(lambda p: init_qa_state(model, tx, init_rng, p), out_shardings=state_sharding)
    encoder = pretrained.params
    del pretrained

    sampler = TaskSampler({"qa": len(train_feats)}, {"qa": config.batch_size}, "all", config.seed, config.num_steps)
    predictor = QAPredictor(model, mesh, config.eval_batch_size)
    answers: dict[str, str] = {}

    def evaluate(state: TrainState) -> dict[str, float]:
        metrics, found = evaluate_qa(config, predictor, state.params, dev, dev_feats)
        answers.clear()
        answers.update(found)
        return metrics

    program = loop.Program(
        name="squad",
        abstract_state=abstract_state,
        state_sharding=state_sharding,
        init=lambda: init(put_global(encoder, param_shardings(encoder, mesh, prefix=ENCODER_PREFIX))),
        batch=lambda step: runner.put_host(train_feats.take(sampler.indices("qa", step))),
        step=lambda state, b: runner.step(state, b, dropout_rng),
        evaluate=evaluate,
        best_metric="f1",
        describe_fault=lambda flags: "non-finite QA loss or gradient",
    )
    outcome = loop.run(program, config, workdir)
    common = outcome.common_results(config)
    results = {
        "model": config.model.name,
        "train_file": config.data.train_file,
        "dev_file": config.data.dev_file,
        "train_windows": len(train_feats),
        "dev_questions": len(dev),
        "skipped_questions": {"train": train_feats.skipped_counts(), "dev": dev_feats.skipped_counts()},
        **{k: common[k] for k in ("steps", "resumed_from_step", "train_seconds", "seconds_per_step",
                                  "skipped_nonfinite_steps", "dev", "best_dev")},
        "train_loss": outcome.values("loss", logged_only=True),
    }
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "predictions.json"), answers)
    loop.write_results(workdir, results)
    return results
