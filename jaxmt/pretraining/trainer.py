"""The pre-training loop: corpus, model and optimizer from the config; a sharded jitted step; logging,
held-out evaluation per task, checkpoints and resumption; the encoder exported as a Hugging Face BERT.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxmt.config_checks import check_accumulation, check_model_options, one_of
from jaxmt.core.rngs import stream_key
from jaxmt.errors import ConfigError
from jaxmt.models.hf_checkpoint import save_hf_model
from jaxmt.models.options import EncoderOptions
from jaxmt.models.pretrained import ModelError, load_pretrained, resolve_model_dir
from jaxmt.parallel import distributed
from jaxmt.parallel.host_data import put_global, put_host_batch
from jaxmt.parallel.mesh import batch_sharding, check_divisible, data_parallel_size, make_mesh, replicated
from jaxmt.parallel.sharding_rules import check_heads, param_shardings
from jaxmt.parallel.state_sharding import state_shardings
from jaxmt.parallel.step_runner import make_step_runner
from jaxmt.paths import local_staging
from jaxmt.pretraining.corpus import CorpusSpec, check_corpus_spec, load_corpus, split_heldout
from jaxmt.pretraining.examples import SWAP_UNITS, Pairs, PairStream, Vocabulary, build_pairs, make_batch
from jaxmt.pretraining.layer_coverage import check_every_layer_trained
from jaxmt.pretraining.model import (
    BIGRAM_HEADS,
    POOLING_MODES,
    PRETRAINED_SCOPES,
    TASKS,
    TRANSFER_MODES,
    HierarchicalBert,
    encoder_params,
)
from jaxmt.pretraining.step import init_train_state, make_eval_step, make_train_step
from jaxmt.training import loop
from jaxmt.training.optimizer import make_optimizer

log = logging.getLogger(__name__)

HF_MODEL_DIR = "hf_model"


def check_config(config: ConfigDict) -> None:
    """Checks that need no model or data: task names, transfer mode, sizes, the corpus files."""
    names = tuple(config.task_names)
    if not names or len(set(names)) != len(names) or not set(names) <= set(TASKS):
        raise ConfigError(f"config.task_names = {names}; expected distinct names from {TASKS}")
    one_of(config.transfer, TRANSFER_MODES, "transfer")
    one_of(config.pooling, POOLING_MODES, "pooling")
    if config.transfer != "none" and not {"mlm", "nsp"} <= set(names):
        raise ConfigError(f"config.transfer = {config.transfer!r} passes NSP's representation to the MLM task: "
                          f"config.task_names must include both 'nsp' and 'mlm' (it is {names})")
    one_of(config.tasks.bigram_shift.unit, SWAP_UNITS, "tasks.bigram_shift.unit")
    one_of(config.tasks.bigram_shift.head, BIGRAM_HEADS, "tasks.bigram_shift.head")
    check_model_options(config.model)
    one_of(config.optim.gradient_surgery, ("none",), "optim.gradient_surgery")
    one_of(config.on_nonfinite, ("stop", "skip"), "on_nonfinite")
    if not 0.0 < config.tasks.mlm.mask_rate < 1.0:
        raise ConfigError(f"config.tasks.mlm.mask_rate = {config.tasks.mlm.mask_rate}; expected a fraction in (0, 1)")
    if config.tasks.mlm.max_predictions < 1:
        raise ConfigError("config.tasks.mlm.max_predictions must be >= 1")
    if config.data.max_length < 8:
        raise ConfigError(f"config.data.max_length = {config.data.max_length}; expected at least 8 tokens")
    if not 0.0 < config.data.heldout_fraction < 1.0:
        raise ConfigError(f"config.data.heldout_fraction = {config.data.heldout_fraction}; expected a fraction "
                          "in (0, 1)")
    for field in ("batch_size", "num_steps", "eval_batch_size", "log_every", "checkpoint_every"):
        if config[field] < 1:
            raise ConfigError(f"config.{field} must be >= 1")
    check_corpus_spec(CorpusSpec.from_config(config.data))


def task_layers(config: ConfigDict, num_layers: int) -> tuple[tuple[str, int], ...]:
    """((task, layer), ...) of the tasks trained, each layer checked against the encoder's depth."""
    layers = {}
    for task in config.task_names:
        layer = config.tasks[task].layer
        if not isinstance(layer, int) or not 1 <= layer <= num_layers:
            raise ConfigError(f"config.tasks.{task}.layer = {layer!r}; the encoder has {num_layers} layers, so "
                              f"expected 1..{num_layers}")
        layers[task] = layer
    if config.transfer in ("add_cls", "add_all") and layers["nsp"] >= layers["mlm"]:
        raise ConfigError(f"config.transfer = {config.transfer!r} adds NSP's representation to the layer above "
                          f"the NSP layer, which the MLM head must read: config.tasks.nsp.layer ({layers['nsp']}) "
                          f"must be below config.tasks.mlm.layer ({layers['mlm']})")
    if config.transfer == "concat" and layers["nsp"] > layers["mlm"]:
        raise ConfigError(f"config.transfer = 'concat' passes NSP's representation upward: config.tasks.nsp.layer "
                          f"({layers['nsp']}) must not be above config.tasks.mlm.layer ({layers['mlm']})")
    check_every_layer_trained(layers, num_layers)
    return tuple(sorted(layers.items()))


def load_tokenizer(name: str) -> Any:
    """The fast tokenizer of a model alias, directory or Hub id (no weights needed)."""
    from transformers import AutoTokenizer

    path = resolve_model_dir(name, weights=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    except Exception as err:  # transformers raises many kinds; all mean "no usable tokenizer"
        raise ModelError(f"{path}: no usable tokenizer ({type(err).__name__}: {err}) "
                         "(config.model.tokenizer)") from None
    if not getattr(tokenizer, "is_fast", False) or tokenizer.mask_token_id is None:
        raise ModelError(f"{path}: need a fast BERT tokenizer with [CLS], [SEP] and [MASK] (config.model.tokenizer)")
    return tokenizer


def model_source(config: ConfigDict) -> tuple[Any, dict | None, Any]:
    """(BertConfig, pretrained encoder params or None, tokenizer): from a checkpoint, or sizes for from scratch."""
    if config.model.init_from:
        pretrained = load_pretrained(config.model.init_from)
        log.info("continuing from %s (%d layers, hidden %d); config.model sizes are not used", pretrained.path,
                 pretrained.config.num_hidden_layers, pretrained.config.hidden_size)
        return pretrained.config, pretrained.params, pretrained.tokenizer
    from transformers import BertConfig

    tokenizer = load_tokenizer(config.model.tokenizer)
    if config.model.hidden_size % config.model.num_heads:
        raise ConfigError(f"config.model.hidden_size = {config.model.hidden_size} is not divisible by "
                          f"config.model.num_heads = {config.model.num_heads}")
    bert_config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=config.model.hidden_size, num_hidden_layers=config.model.num_layers,
        num_attention_heads=config.model.num_heads, intermediate_size=config.model.intermediate_size,
        hidden_dropout_prob=config.model.dropout, attention_probs_dropout_prob=config.model.dropout,
        max_position_embeddings=max(512, config.data.max_length), pad_token_id=tokenizer.pad_token_id)
    return bert_config, None, tokenizer


def heldout_batches(corpus, vocab: Vocabulary, config: ConfigDict) -> list[dict[str, np.ndarray]]:
    """The fixed held-out evaluation set: pairs, swaps and masks drawn once from a seed of their own;
    the last batch is padded with zero-weight rows."""
    rng = np.random.default_rng([config.seed, 0xE7A1])
    pairs = build_pairs(corpus, vocab, config.data.max_length, config.data.short_seq_prob, rng)
    if config.data.max_eval_examples > 0:
        pairs = pairs.take(np.arange(min(len(pairs), config.data.max_eval_examples)))
    batch = make_batch(pairs, vocab, rng, config.tasks.mlm.mask_rate, config.tasks.mlm.max_predictions,
                       "bigram_shift" in config.task_names, config.tasks.bigram_shift.unit)
    size = config.eval_batch_size
    padded = -(-len(pairs) // size) * size
    batch = {k: np.concatenate([v, np.zeros((padded - len(v),) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, padded, size)]


def evaluate(eval_step, params: dict, batches: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Held-out loss and accuracy per task ('<task>/loss', '<task>/accuracy'), summed over all batches."""
    totals: dict[str, dict[str, float]] = {}
    for batch in batches:
        for task, stats in jax.device_get(eval_step(params, batch)).items():
            for key, value in stats.items():
                totals.setdefault(task, {}).setdefault(key, 0.0)
                totals[task][key] += float(value)
    out = {}
    for task, t in sorted(totals.items()):
        out[f"{task}/loss"] = t["loss_sum"] / max(t["count"], 1.0)
        out[f"{task}/accuracy"] = t["correct"] / max(t["count"], 1.0)
    return out


def pretrain(config: ConfigDict, workdir: str) -> dict:
    """Pre-trains per `config` in `workdir` (resuming from its latest checkpoint), evaluates on held-out
    documents, writes results.json and the encoder to `workdir/hf_model/`; returns the results."""
    check_config(config)
    distributed.initialize(config.parallel)  # before any JAX computation; a no-op for one process
    bert_config, pretrained, tokenizer = model_source(config)
    layers = task_layers(config, bert_config.num_hidden_layers)
    if config.data.max_length > bert_config.max_position_embeddings:
        raise ConfigError(f"config.data.max_length = {config.data.max_length} exceeds the model's "
                          f"{bert_config.max_position_embeddings} position embeddings")
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    check_divisible(config.batch_size, mesh, "config.batch_size")
    check_accumulation(config.batch_size, config.optim.accumulation_steps, data_parallel_size(mesh), "batch_size")
    check_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
    check_heads(bert_config.num_attention_heads, mesh)
    loop.prepare_workdir(config, workdir)

    vocab = Vocabulary.from_tokenizer(tokenizer)
    corpus = load_corpus(CorpusSpec.from_config(config.data), tokenizer, config.data.cache_dir or None)
    train_corpus, heldout_corpus = split_heldout(corpus, config.data.heldout_fraction, config.seed)
    stream = PairStream(train_corpus, vocab, config.data.max_length, config.data.short_seq_prob, config.seed)
    data_sharding = batch_sharding(mesh)
    eval_batches = [put_host_batch(b, data_sharding) for b in heldout_batches(heldout_corpus, vocab, config)]
    use_bigrams = "bigram_shift" in config.task_names

    def host_batch(step: int, block: tuple[int, int] = (0, 1)) -> dict[str, np.ndarray]:
        """Block i of n of step `step`'s batch (this process's rows): each row's swap and masks drawn from a
        generator of its own, seeded by (seed, step, row), so a row is the same whichever process builds it."""
        i, n = block
        rows = np.array_split(np.arange(config.batch_size), n)[i]
        pairs: Pairs = stream.batch(step, config.batch_size, slice(int(rows[0]), int(rows[-1]) + 1))
        parts = [make_batch(pairs.take(np.asarray([k])), vocab, np.random.default_rng([config.seed, step, 2, int(row)]),
                            config.tasks.mlm.mask_rate, config.tasks.mlm.max_predictions, use_bigrams,
                            config.tasks.bigram_shift.unit) for k, row in enumerate(rows)]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    model = HierarchicalBert(bert_config, layers, config.transfer, config.pooling, config.tasks.bigram_shift.head,
                             **EncoderOptions.from_config(config.model).kwargs())
    tx = make_optimizer(config, config.num_steps, len(layers), encoder_scopes=PRETRAINED_SCOPES)
    init_rng, dropout_rng = stream_key(config.seed, "init"), stream_key(config.seed, "dropout")
    example = {k: v[:2] for k, v in host_batch(0).items()}
    init = lambda encoder: init_train_state(model, tx, init_rng, example, encoder)  # noqa: E731
    abstract_state = jax.eval_shape(init, pretrained)
    state_sharding = state_shardings(abstract_state, mesh)
    weights = {task: float(config.tasks[task].weight) for task, _ in layers}
    accumulation = config.optim.accumulation_steps
    runner = make_step_runner(config.parallel.mode, mesh,
                              lambda axis: make_train_step(model, tx, weights, axis, accumulation), state_sharding)
    eval_step = jax.jit(make_eval_step(model), in_shardings=(state_sharding.params, data_sharding),
                        out_shardings=replicated(mesh))

    program = loop.Program(
        name="pretrain",
        abstract_state=abstract_state,
        state_sharding=state_sharding,
        init=lambda params=pretrained: jax.jit(init, out_shardings=state_sharding)(
            None if params is None else put_global(params, param_shardings(params, mesh))),
        batch=lambda step: runner.put_block(host_batch(step, runner.block)),  # this process's rows only
        step=lambda state, b: runner.step(state, b, dropout_rng),
        evaluate=lambda state: evaluate(eval_step, state.params, eval_batches),
        eval_prefix="heldout",
        evaluate_first=True,
    )
    del pretrained
    outcome = loop.run(program, config, workdir)
    heldout = outcome.dev or evaluate(eval_step, outcome.state.params, eval_batches)  # resumed at the last step
    export_dir = os.path.join(workdir, HF_MODEL_DIR)
    if jax.process_index() == 0:
        with local_staging(export_dir) as local:  # Hugging Face writes local files; a gs:// workdir gets a copy
            save_hf_model(local, jax.device_get(encoder_params(outcome.state.params)), bert_config, tokenizer)
    common = outcome.common_results(config)
    results = {
        "tasks": {task: {"layer": layer, "weight": weights[task]} for task, layer in layers},
        "transfer": config.transfer,
        "pooling": config.pooling,
        "bigram_head": config.tasks.bigram_shift.head,
        "model": {"init_from": config.model.init_from or "scratch", "layers": bert_config.num_hidden_layers,
                  "hidden_size": bert_config.hidden_size, "vocab_size": bert_config.vocab_size},
        "corpus": {"source": corpus.source, "documents": corpus.num_documents, "tokens": int(len(corpus.tokens)),
                   "train_documents": train_corpus.num_documents, "heldout_documents": heldout_corpus.num_documents,
                   "pairs_per_epoch": len(stream.epoch(0))},
        **{k: common[k] for k in ("steps", "resumed_from_step", "train_seconds", "seconds_per_step", "devices",
                                  "skipped_nonfinite_steps")},
        "batch_size": config.batch_size,
        "initial_heldout": outcome.initial_dev,
        "heldout": heldout,
        "hf_model": export_dir,
    }
    loop.write_results(workdir, results)
    return results
