"""Building a run's pieces from its config: checks, tokenized data, model, shardings.

Shared by the trainer and `jaxmt.evaluate`, so both build the same model from the same
config, and every config error surfaces here, before anything is compiled.
"""

from __future__ import annotations

import logging

from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.config_checks import check_accumulation, check_model_options, one_of
from jaxmt.data.sampling import SAMPLING_MODES
from jaxmt.data.schema import HEADS, TaskData, TaskSpec
from jaxmt.data.tokenization import PAIR_MODES, SEQUENCES_PER_PAIR, EncodedSplit, encode_split
from jaxmt.errors import ConfigError
from jaxmt.models.multitask import MultitaskModel, SharedBackbone
from jaxmt.models.options import EncoderOptions
from jaxmt.parallel.mesh import check_divisible, data_parallel_size
from jaxmt.parallel.state_sharding import state_shardings as rule_shardings

log = logging.getLogger(__name__)


def check_config(config: ConfigDict) -> None:
    """Cross-field checks that ml_collections' typed fields cannot express."""
    one_of(config.sampling, SAMPLING_MODES, "sampling")
    one_of(config.model.pair_mode, PAIR_MODES, "model.pair_mode")
    one_of(config.model.pooling, ("mean", "cls"), "model.pooling")
    check_model_options(config.model)
    one_of(config.optim.gradient_surgery, ("none", "pcgrad"), "optim.gradient_surgery")
    one_of(config.optim.surgery_scope, ("all", "shared"), "optim.surgery_scope")
    one_of(config.optim.surgery_reduction, ("sum", "mean"), "optim.surgery_reduction")
    one_of(config.loss.combination, ("sum", "weighted"), "loss.combination")
    one_of(config.data.on_bad_row, ("error", "skip"), "data.on_bad_row")
    one_of(config.on_nonfinite, ("stop", "skip"), "on_nonfinite")
    if config.optim.gradient_surgery == "pcgrad" and config.sampling != "all":
        raise ConfigError("optim.gradient_surgery='pcgrad' needs every task's gradient each step: set sampling='all'")
    if config.optim.get("surgery_groups", ()) and config.optim.gradient_surgery != "pcgrad":
        raise ConfigError("config.optim.surgery_groups pairs losses for PCGrad: set optim.gradient_surgery='pcgrad' "
                          "or leave surgery_groups empty")
    surgery_groups(config, config.task_names)
    buckets = tuple(config.data.buckets)
    if not buckets or list(buckets) != sorted(set(buckets)) or min(buckets) < 4:
        raise ConfigError(f"config.data.buckets = {buckets}: need increasing lengths >= 4")
    if config.data.max_length > max(buckets):
        raise ConfigError(f"config.data.max_length = {config.data.max_length} is longer than the largest bucket "
                          f"{max(buckets)}")
    if config.data.get("packing", False) and config.data.pack_length < config.data.max_length:
        raise ConfigError(f"config.data.pack_length = {config.data.pack_length} is shorter than "
                          f"config.data.max_length = {config.data.max_length}: a sequence must fit a packed row")
    if config.num_steps < 1:
        raise ConfigError("config.num_steps must be >= 1")
    for name in config.task_names:
        if name in config.tasks and config.tasks[name].batch_size < 1:
            raise ConfigError(f"config.tasks.{name}.batch_size must be >= 1")
        head = config.tasks[name].get("head", "linear") if name in config.tasks else "linear"
        one_of(head, HEADS, f"tasks.{name}.head")
        if name in config.tasks and config.tasks[name].get("pair_mode", ""):
            one_of(config.tasks[name].pair_mode, PAIR_MODES, f"tasks.{name}.pair_mode")
        if head == "cosine" and pair_mode(config, name) == "cross":
            raise ConfigError(f"config.tasks.{name}.head='cosine' compares u and v encoded each alone: set "
                              f"config.tasks.{name}.pair_mode or config.model.pair_mode to 'siamese' (or 'triplet')")


def pair_mode(config: ConfigDict, task: str) -> str:
    """How `task`'s sentence pairs are encoded: its own `tasks.<task>.pair_mode`, else `model.pair_mode` (so one run
    can encode Quora jointly and STS one sentence at a time for the cosine head)."""
    own = config.tasks[task].get("pair_mode", "") if task in config.tasks else ""
    return own or config.model.pair_mode


def surgery_groups(config: ConfigDict, task_names) -> tuple[tuple[str, ...], ...]:
    """The task groups PCGrad operates on, in the order their gradients are stacked.

    `config.optim.surgery_groups` empty: every task its own group, in sorted order (the stacking the
    step has always used). Otherwise each group sorted and the groups sorted, so the stacking does
    not depend on how the config spells them; every task of `task_names` in exactly one group.
    """
    tasks = sorted(task_names)
    spelled = config.optim.get("surgery_groups", ())
    if not spelled:
        return tuple((t,) for t in tasks)
    field = f"config.optim.surgery_groups = {_show_groups(spelled)}"
    if isinstance(spelled, str) or not all(isinstance(g, (tuple, list)) and g for g in spelled):
        raise ConfigError(f"{field}: give a tuple of non-empty task tuples, e.g. (('sst',), ('para', 'sts'))")
    named = [t for group in spelled for t in group]
    unknown = sorted({str(t) for t in named} - set(tasks))
    if unknown:
        raise ConfigError(f"{field}: unknown task {', '.join(unknown)}; the run trains {', '.join(tasks)}")
    twice = sorted({t for t in named if named.count(t) > 1})
    missing = [t for t in tasks if t not in named]
    if twice or missing:
        raise ConfigError(f"{field}: every task must be in exactly one group"
                          + (f"; {', '.join(twice)} in several" if twice else "")
                          + (f"; {', '.join(missing)} in none" if missing else ""))
    return tuple(sorted(tuple(sorted(group)) for group in spelled))


def _show_groups(groups) -> str:
    if isinstance(groups, str):
        return repr(groups)
    return repr(tuple(tuple(g) if isinstance(g, (tuple, list)) else g for g in groups))


def group_label(group: tuple[str, ...]) -> str:
    """A group's name in metrics: its tasks joined by '+' (a group of one is the task's name)."""
    return "+".join(group)


def pack_groups(config: ConfigDict, data_parallel: int) -> int:
    """Row groups of a packed step before accumulation: `data.pack_groups`, or one a data-parallel device (0).

    Fixed by the config, not the devices, so which examples a step holds (the carry and drops are a group's)
    does not change with the device count; a multiple of the devices, so each holds whole groups."""
    groups = config.data.get("pack_groups", 0) or data_parallel
    if groups < 0 or groups % data_parallel:
        raise ConfigError(f"config.data.pack_groups = {config.data.pack_groups} is not a multiple of the "
                          f"{data_parallel} data-parallel device(s): make it one, or 0 for one group a device")
    return groups


def check_batches_fit(config: ConfigDict, mesh: Mesh) -> None:
    groups = pack_groups(config, data_parallel_size(mesh)) if config.data.packing else data_parallel_size(mesh)
    for name in config.task_names:
        check_divisible(config.tasks[name].batch_size, mesh, f"config.tasks.{name}.batch_size")
        check_accumulation(config.tasks[name].batch_size, config.optim.accumulation_steps, data_parallel_size(mesh),
                           f"tasks.{name}.batch_size")
        if config.tasks[name].batch_size % (groups * config.optim.accumulation_steps):
            raise ConfigError(f"config.tasks.{name}.batch_size = {config.tasks[name].batch_size} does not split into "
                              f"{groups} packed row groups x {config.optim.accumulation_steps} accumulation steps "
                              f"(data.pack_groups, optim.accumulation_steps): make it a multiple of "
                              f"{groups * config.optim.accumulation_steps}")
    check_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")


def loss_weights(config: ConfigDict, specs: dict[str, TaskSpec]) -> dict[str, float]:
    if config.loss.combination == "sum":
        return {t: 1.0 for t in specs}
    return {t: float(config.tasks[t].weight) for t in specs}


def build_model(config: ConfigDict, bert_config, specs: dict[str, TaskSpec]) -> MultitaskModel:
    backbone = SharedBackbone(
        bert_config=bert_config,
        pooling=config.model.pooling,
        shared_layers=config.model.shared_layers,
        shared_dim=config.model.shared_dim,
        dropout_rate=config.model.dropout,
        **EncoderOptions.from_config(config.model).kwargs(),
    )
    return MultitaskModel(backbone=backbone, specs=specs, num_sequences={
        t: SEQUENCES_PER_PAIR[pair_mode(config, t)] if s.is_pair else 1 for t, s in specs.items()})


def encode_splits(config: ConfigDict, data: dict[str, TaskData], tokenizer) -> dict[str, EncodedSplit]:
    encoded = {}
    for task, split in data.items():
        encoded[task] = encode_split(split, tokenizer, config.data.max_length, pair_mode(config, task))
        if encoded[task].num_truncated:
            log.info("%s %s: %d of %d examples truncated to %d tokens", task, split.split,
                         encoded[task].num_truncated, len(split), config.data.max_length)
    return encoded


def state_shardings(abstract_state, mesh: Mesh):
    """Shardings of a TrainState or params tree: params by `jaxmt.parallel.sharding_rules` (FSDP over 'fsdp',
    Megatron over 'tensor'), optimizer state following its params; errors name any param that does not split."""
    return rule_shardings(abstract_state, mesh)
