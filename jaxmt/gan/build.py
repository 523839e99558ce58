"""A GAN run's pieces from its config: checks, data with its labeled subset, networks, optimizers.

Shared by the GAN trainer and the baseline, so both read the same task, the same labeled subset
(a function of the config's seed and fraction) and the same dev set.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.data.demo import DEMO_BANNER
from jaxmt.data.schema import CLASSIFICATION, TaskSpec
from jaxmt.data.sources import load_splits, task_specs
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.errors import ConfigError
from jaxmt.gan.losses import LossWeights
from jaxmt.gan.networks import FORMS, Discriminator, Generator
from jaxmt.gan.semi_supervised import stratified_labeled_subset
from jaxmt.gan.step import FAKE_LABELS, UPDATES, GanModel
from jaxmt.models.pretrained import PretrainedBert, load_pretrained
from jaxmt.parallel import distributed
from jaxmt.parallel.mesh import make_mesh
from jaxmt.training import loop, setup
from jaxmt.training.optimizer import learning_rate_schedule

log = logging.getLogger(__name__)

METHODS = ("acgan", "baseline")
G_SCHEDULES = ("same_as_d", "constant")  # G's learning rate: D's warm-up + linear decay shape | constant
LABELED_COPIES = ("none", "log2")  # labeled rows in batches: min_labeled_per_batch | the reference's copies


def check_gan_config(config: ConfigDict) -> None:
    """The general checks, then the GAN block's: one classification task, sensible sizes and weights."""
    if "gan" not in config:
        raise ConfigError("this config has no `gan` block: start from configs/acgan.py")
    setup.check_config(config)
    gan = config.gan
    for field, allowed in (("method", METHODS), ("form", FORMS), ("update_order", UPDATES),
                           ("g_schedule", G_SCHEDULES), ("fake_labels", FAKE_LABELS),
                           ("labeled_copies", LABELED_COPIES)):
        if gan[field] not in allowed:
            raise ConfigError(f"config.gan.{field} = {gan[field]!r}; expected one of {allowed}")
    if gan.method == "acgan" and gan.fake_batch_size % config.optim.accumulation_steps:
        raise ConfigError(f"config.gan.fake_batch_size = {gan.fake_batch_size} does not split into "
                          f"config.optim.accumulation_steps = {config.optim.accumulation_steps} micro-batches (each "
                          "takes its share of the step's fakes): make it a multiple, or 0 (= the batch size)")
    if len(config.task_names) != 1:
        raise ConfigError(f"config.task_names = {tuple(config.task_names)}: a GAN run trains one classification "
                          "task, e.g. --config.task_names=sst")
    task = config.tasks.get(config.task_names[0], None)
    if task is not None and (task.kind != CLASSIFICATION or task.pair):
        raise ConfigError(f"task {config.task_names[0]!r} is a {task.kind} {'pair ' if task.pair else ''}task; "
                          "AC-GAN-BERT needs a single-sentence classification task (e.g. sst)")
    if not 0.0 < gan.labeled_fraction <= 1.0:
        raise ConfigError(f"config.gan.labeled_fraction = {gan.labeled_fraction}: must be in (0, 1]")
    for field in ("noise_dim", "d_layers", "collapse_examples", "collapse_fakes_per_class"):
        if gan[field] < 1:
            raise ConfigError(f"config.gan.{field} = {gan[field]}: must be >= 1")
    for field in ("g_layers", "g_width", "d_width", "fake_batch_size"):
        if gan[field] < 0:
            raise ConfigError(f"config.gan.{field} = {gan[field]}: must be >= 0")
    for field in ("g_dropout", "d_dropout"):
        if not 0.0 <= gan[field] < 1.0:
            raise ConfigError(f"config.gan.{field} = {gan[field]}: must be in [0, 1)")
    batch_size = task.batch_size if task is not None else 0
    if gan.fake_labels == "batch" and gan.fake_batch_size not in (0, batch_size):
        raise ConfigError(f"config.gan.fake_batch_size = {gan.fake_batch_size}: with gan.fake_labels='batch' G makes "
                          f"one fake a real row; set it to 0 (= the batch size, {batch_size})")
    negative = [k for k, v in gan.weights.items() if v is not None and v < 0]
    if negative:
        raise ConfigError(f"config.gan.weights: {negative} negative; loss weights must be >= 0")


@dataclasses.dataclass
class GanData:
    """The task, its encoded train and dev splits, and the labeled subset of train."""

    spec: TaskSpec
    pretrained: PretrainedBert
    train: EncodedSplit
    dev: EncodedSplit
    labeled: np.ndarray  # indices into train
    is_demo: bool

    @property
    def pad_id(self) -> int:
        return self.pretrained.tokenizer.pad_token_id

    def class_counts(self, indices: np.ndarray | None = None) -> list[int]:
        labels = self.train.data.labels if indices is None else self.train.data.labels[indices]
        return np.bincount(labels, minlength=self.spec.num_classes).tolist()


def load_gan_data(config: ConfigDict, pretrained: PretrainedBert | None = None) -> GanData:
    """Reads and tokenizes train and dev of the one task and picks its labeled subset."""
    specs = task_specs(config)
    (name, spec), = specs.items()
    pretrained = pretrained or load_pretrained(config.model.name)
    train_data = load_splits(config, specs, "train")[name]
    dev = load_splits(config, specs, "dev")
    if name not in dev or dev[name].labels is None:
        raise ConfigError(f"task {name!r} has no labeled dev split: AC-GAN-BERT reports dev accuracy")
    if train_data.labels is None:
        raise ConfigError(f"task {name!r}: the training split has no labels")
    encoded = setup.encode_splits(config, {name: train_data}, pretrained.tokenizer)[name]
    dev_split = setup.encode_splits(config, {name: dev[name]}, pretrained.tokenizer)[name]
    labeled = stratified_labeled_subset(train_data.labels, config.gan.labeled_fraction, config.seed)
    data = GanData(spec=spec, pretrained=pretrained, train=encoded, dev=dev_split, labeled=labeled,
                   is_demo=train_data.is_demo)
    log.info("%s: %d of %d training examples labeled (fraction %g, per class %s)", name, len(labeled),
             len(train_data), config.gan.labeled_fraction, data.class_counts(labeled))
    return data


def make_mesh_for(config: ConfigDict) -> Mesh:
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    setup.check_batches_fit(config, mesh)
    return mesh


def build_gan(config: ConfigDict, bert_config, spec: TaskSpec) -> GanModel:
    encoder = setup.build_model(config, bert_config, {spec.name: spec})
    dim = encoder.backbone.feature_dim
    g = config.gan
    generator = Generator(num_classes=spec.num_classes, feature_dim=dim, noise_dim=g.noise_dim,
                          hidden=(g.g_width or dim,) * g.g_layers, dropout_rate=g.g_dropout, slope=g.leaky_slope,
                          unlabeled_slot=g.fake_labels == "batch")
    discriminator = Discriminator(num_classes=spec.num_classes, feature_dim=dim, form=g.form,
                                  hidden=(g.d_width or dim,) * g.d_layers, dropout_rate=g.d_dropout,
                                  slope=g.leaky_slope)
    batch_size = config.tasks[spec.name].batch_size
    return GanModel(encoder=encoder, generator=generator, discriminator=discriminator,
                    weights=LossWeights.from_config(g.weights, g.form), fake_batch_size=g.fake_batch_size or batch_size,
                    fake_labels=g.fake_labels)


def generator_learning_rate(config: ConfigDict, num_steps: int) -> optax.Schedule:
    """G's learning rate by step, peaking at `gan.g_learning_rate`.
    'same_as_d': the warm-up + linear decay of encoder+D (`learning_rate_schedule`), as the reference
    GAN-BERT trains G and D (crux82/ganbert, ganbert.py: one `create_optimizer` call each, same rate and
    steps); 'constant': the peak from step 0 to the end."""
    peak = config.gan.g_learning_rate
    if config.gan.g_schedule == "constant":
        return optax.constant_schedule(peak)
    return learning_rate_schedule(config, num_steps, peak=peak)


def generator_optimizer(config: ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """G's own optimizer: clipped AdamW at `generator_learning_rate`; on D's schedule also with D's weight
    decay (`optim.weight_decay`, on kernels only, as D's AdamW leaves biases out), constant without any."""
    chain = [optax.clip_by_global_norm(config.optim.clip_norm)] if config.optim.clip_norm > 0 else []
    same_as_d = config.gan.g_schedule == "same_as_d"
    kernels = lambda params: jax.tree_util.tree_map(lambda x: x.ndim > 1, params)  # noqa: E731
    return optax.chain(*chain, optax.adamw(generator_learning_rate(config, num_steps), b1=0.9, b2=0.999, eps=1e-8,
                                           weight_decay=config.optim.weight_decay if same_as_d else 0.0,
                                           mask=kernels))


def prepare_gan_run(config: ConfigDict, workdir: str, data: GanData | None, method: str) -> tuple[Mesh, GanData, str]:
    """What a GAN run and its baseline check and build first: the config, the mesh, the workdir, the data;
    returns (mesh, data, the demo-data tag for printed lines)."""
    check_gan_config(config)
    if config.optim.gradient_surgery != "none":
        raise ConfigError(f"{method} trains one task: set --config.optim.gradient_surgery=none")
    if config.parallel.mode != "jit":
        raise ConfigError(f"config.parallel.mode = {config.parallel.mode!r}: AC-GAN-BERT and its baseline run on "
                          "the jit path only (it covers data parallelism too); set --config.parallel.mode=jit")
    distributed.initialize(config.parallel)  # before any JAX computation; a no-op for one process
    mesh = make_mesh_for(config)
    loop.prepare_workdir(config, workdir)
    data = data or load_gan_data(config)
    return mesh, data, f"[{DEMO_BANNER}] " if data.is_demo else ""
