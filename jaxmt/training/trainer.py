"""Multitask fine-tuning: data, model and optimizer from the config, run by the shared loop
(`jaxmt.training.loop`) with a sharded jit (or pmap) step.
"""

from __future__ import annotations

import logging
import math

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxmt.core.rngs import stream_key
from jaxmt.data.demo import DEMO_BANNER
from jaxmt.data.packing import PackedTaskSampler, layout_for, train_step_batches
from jaxmt.data.sampling import TaskSampler
from jaxmt.data.sources import first_skipped_rows, load_splits, task_specs
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.models.pretrained import load_pretrained
from jaxmt.parallel import distributed
from jaxmt.parallel.host_data import put_global
from jaxmt.parallel.mesh import data_parallel_size, make_mesh
from jaxmt.parallel.sharding_rules import check_heads
from jaxmt.parallel.state_sharding import encoder_shardings
from jaxmt.training import loop, setup
from jaxmt.training.evaluation import Predictor, run_eval_packing
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, multitask_step_runner

log = logging.getLogger(__name__)


def steps_per_epoch(train_sizes: dict[str, int], examples_per_step: dict[str, float]) -> tuple[str, int]:
    """The largest task and its epoch in steps: ceil(train size / examples a step), what sampling='all' takes
    to see it once (examples a step: `TaskSampler.examples_per_step`, the batch size, packed or not)."""
    largest = max(sorted(train_sizes), key=lambda t: train_sizes[t])
    return largest, math.ceil(train_sizes[largest] / examples_per_step[largest])


def epoch_num_steps(config: ConfigDict, train_sizes: dict[str, int], examples_per_step: dict[str, float]) -> int:
    """`config.num_epochs` as num_steps, in the epochs `epoch_eval_every` counts: 3 epochs are 3 of its intervals."""
    largest, epoch = steps_per_epoch(train_sizes, examples_per_step)
    num_steps = max(1, math.ceil(config.num_epochs * epoch))
    log.info("num_epochs=%g: training %d steps (an epoch of %s, the largest task, is %d steps)",
             config.num_epochs, num_steps, largest, epoch)
    return num_steps


def epoch_eval_every(config: ConfigDict, train_sizes: dict[str, int], examples_per_step: dict[str, float]) -> int:
    """`config.eval_every_epochs` as a step interval: epochs of the largest task (`steps_per_epoch`)."""
    largest, epoch = steps_per_epoch(train_sizes, examples_per_step)
    every = max(1, round(config.eval_every_epochs * epoch))
    log.info("eval_every_epochs=%g: evaluating every %d steps (an epoch of %s, the largest task, is %d steps)",
             config.eval_every_epochs, every, largest, epoch)
    return every


def _surgery_metrics(opt_state, task_names: list[str]) -> dict[str, float]:
    """PCGrad's conflict count and pairwise gradient cosines of the last step, if it is in the chain.

    `task_names` name the stacked gradients: tasks, or surgery groups ('para+sts')."""
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


def _nonfinite_tasks(flags: dict) -> str:
    tasks = [k.split("/", 1)[1] for k, v in flags.items() if "/" in k and v]
    return f"non-finite loss in task {', '.join(tasks)}" if tasks else "non-finite gradient (all losses finite)"


DROP_CHECK_STEPS = 200  # steps over which the start measures packing's dropped examples (placements only)


def make_sampler(config: ConfigDict, train: dict[str, EncodedSplit], data_parallel: int) -> TaskSampler:
    """The training sampler: each task's batch size of examples a step in `setup.pack_groups` row groups
    (`data.pack_groups`, a multiple of the `data_parallel` devices) of `data.pack_length`-token rows, or
    fixed-size padded batches when `data.packing` is off. Training batches hold `optim.accumulation_steps` times
    the groups: a micro-batch is whole groups, the same number on every device. (Dev sets are evaluated in rows
    sized to their examples: `jaxmt.training.evaluation.run_eval_packing`.)"""
    batch_sizes = {t: config.tasks[t].batch_size for t in train}
    if not config.data.packing:
        return TaskSampler({t: len(s.data) for t, s in train.items()}, batch_sizes, config.sampling, config.seed,
                           config.num_steps)
    length = config.data.pack_length
    train_groups = setup.pack_groups(config, data_parallel) * config.optim.accumulation_steps
    layouts = {t: layout_for(s, batch_sizes[t], length, train_groups, config.data.pack_max_dropped)
               for t, s in train.items()}
    sampler = PackedTaskSampler(train, layouts, batch_sizes, config.sampling, config.seed, config.num_steps)
    log.info("packed batches: %s", {t: f"{v.groups}x{v.rows}x{v.length}" for t, v in layouts.items()})
    return sampler


def packing_drops(sampler: TaskSampler, num_steps: int) -> dict:
    """Each task's share of drawn examples packing drops (a carried example still without room), over the first
    DROP_CHECK_STEPS steps, logged and returned for results.json's data record; {} when not packing."""
    if not isinstance(sampler, PackedTaskSampler):
        return {}
    steps = min(num_steps, DROP_CHECK_STEPS)
    shares = sampler.dropped_share(steps)
    log.info("packing drops %s of the drawn examples (first %d steps)",
             {t: f"{share:.2%}" for t, share in shares.items()}, steps)
    return {"packing_dropped_share": {t: round(share, 5) for t, share in shares.items()},
            "packing_dropped_steps": steps}


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the results."""
    setup.check_config(config)
    specs = task_specs(config)
    distributed.initialize(config.parallel)  # before any JAX computation; a no-op for one process
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    setup.check_batches_fit(config, mesh)
    loop.prepare_workdir(config, workdir)
    pretrained = load_pretrained(config.model.name)
    check_heads(pretrained.config.num_attention_heads, mesh)
    tokenizer = pretrained.tokenizer

    train_data = load_splits(config, specs, "train")
    dev_data = load_splits(config, specs, "dev")
    specs = {t: specs[t] for t in train_data}
    is_demo = any(d.is_demo for d in train_data.values())
    train_split = setup.encode_splits(config, train_data, tokenizer)
    dev_split = setup.encode_splits(config, dev_data, tokenizer)

    if config.get("num_epochs", 0.0) > 0:  # num_steps from the epochs, before the schedule and sampler use it
        config = config.copy_and_resolve_references()
        examples = {t: float(config.tasks[t].batch_size) for t in train_split}  # a draw's examples, packed or not
        config.num_steps = epoch_num_steps(config, {t: len(s.data) for t, s in train_split.items()}, examples)
    model = setup.build_model(config, pretrained.config, specs)
    groups = setup.surgery_groups(config, specs)
    tx = make_optimizer(config, config.num_steps, len(groups))
    init_rng, dropout_rng = stream_key(config.seed, "init"), stream_key(config.seed, "dropout")
    abstract_state = jax.eval_shape(lambda p: init_state(model, tx, init_rng, p), pretrained.params)
    state_sharding = setup.state_shardings(abstract_state, mesh)
    runner = multitask_step_runner(config, mesh, model, tx, setup.loss_weights(config, specs), state_sharding)
    init = jax.jit(lambda p: init_state(model, tx, init_rng, p), out_shardings=state_sharding)
    encoder = pretrained.params
    del pretrained

    sampler = make_sampler(config, train_split, data_parallel_size(mesh))
    dropped = packing_drops(sampler, config.num_steps)
    predictor = Predictor(model, mesh, config.eval_batch_size, config.data.buckets, tokenizer.pad_token_id,
                          run_eval_packing(config, dev_split, mesh))  # as jaxmt.evaluate and TrainedModel
    gradient_names = [setup.group_label(g) for g in groups]
    block = train_step_batches(train_split, sampler, 0, config.data.buckets, tokenizer.pad_token_id, runner.block)
    log.info("process %d builds block %d of %d of each batch: %s", jax.process_index(), *runner.block,
             {t: f"{len(b['labels'])} of {len(b['labels']) * runner.block[1]} examples" for t, b in block.items()})
    program = loop.Program(
        name="train",
        abstract_state=abstract_state,
        state_sharding=state_sharding,
        init=lambda: init(put_global(encoder, encoder_shardings(encoder, mesh))),
        batch=lambda step: runner.put_block(  # this process's rows (row groups) only
            train_step_batches(train_split, sampler, step, config.data.buckets, tokenizer.pad_token_id,
                               runner.block)),
        step=lambda state, batch: runner.step(state, batch, dropout_rng),
        evaluate=lambda state: predictor.evaluate(state.params, dev_split)[0],
        best_metric="mean",
        extra_scalars=lambda state: _surgery_metrics(state.opt_state, gradient_names),
        describe_fault=_nonfinite_tasks,
        shape_key=lambda batches: tuple((t, b["input_ids"].shape) for t, b in sorted(batches.items())),
        tag=f"[{DEMO_BANNER}] " if is_demo else "",
    )
    loop_config = config
    if config.get("eval_every_epochs", 0.0) > 0:  # the loop reads eval_every: a copy with the interval in steps
        loop_config = config.copy_and_resolve_references()
        loop_config.eval_every = epoch_eval_every(config, {t: len(s.data) for t, s in train_split.items()},
                                                  sampler.examples_per_step())
    outcome = loop.run(program, loop_config, workdir)
    results = {
        "demo_data": is_demo,
        "data": {"source": config.data.source, "train_sizes": {t: len(d) for t, d in train_data.items()},
                 "skipped_rows": {t: len(d.skipped) for t, d in train_data.items()},
                 "first_skipped_row": first_skipped_rows(train_data), **dropped},
        "model": config.model.name,
        **outcome.common_results(config),
        "eval_every": loop_config.eval_every,
        "devices": mesh.size,
    }
    loop.write_results(workdir, results)
    return results
