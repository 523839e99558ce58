"""Gradient accumulation in the AC-GAN-BERT / GAN-BERT step: k micro-batches give the update of one step over the
whole batch (D's loss as shares of the step's counts, G's feature matching once over the step's embeddings), for
every discriminator form and fake-label mode; the NaN guard covers the whole accumulated step."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from conftest import with_overrides
from test_acgan import gan_config, step_inputs

from jaxmt.core.accumulation import micro_batches
from jaxmt.errors import ConfigError
from jaxmt.gan.build import check_gan_config, load_gan_data
from jaxmt.gan.networks import ACGAN, GANBERT
from jaxmt.gan.step import make_gan_step

TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float32: the micro-batches' shares sum in another order than one batch
MATCHING = {"g_class_feature_matching": 0.5, "g_class_embedding_matching": 0.5}  # every G term on


@pytest.fixture(scope="module")
def exact_data(tmp_path_factory):
    """A one-layer tiny BERT without dropout, and D without dropout: micro-batches draw other dropout masks for
    the encoder and D's pass over real rows than the whole batch does, so only then are the steps equal. G keeps
    its dropout (its masks are the whole step's either way)."""
    from conftest import demo_words

    from jaxmt.models.pretrained import write_random_bert

    model_dir = write_random_bert(tmp_path_factory.mktemp("bert_no_dropout"), demo_words(), seed=0,
                                  num_hidden_layers=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = gan_config(model_dir, **{"gan.labeled_fraction": 0.25, "model.dropout": 0.0, "gan.d_dropout": 0.0})
    assert config.gan.g_dropout > 0
    return config, load_gan_data(config)


def uneven_batch(batch: dict) -> dict:
    """Labeled rows 0, 2, 3 and a padding row 5: 2 micro-batches hold 2 and 1 labeled rows, 4 hold 1, 0, 1, 1
    (a micro-batch's own mean would weigh them wrongly)."""
    batch = {k: np.array(v) for k, v in batch.items()}
    assert batch["label_mask"][:4].tolist() == [1, 1, 1, 1] and batch["label_mask"][4:].sum() == 0
    batch["label_mask"][1] = 0.0
    batch["labels"][1] = 0
    batch["example_mask"][5] = 0
    return batch


def gan_step_inputs(exact_data, form, fake_labels, fake_batch_size=0):
    config, data = exact_data
    config = with_overrides(config.copy_and_resolve_references(),
                            **{"gan.fake_labels": fake_labels, "gan.fake_batch_size": fake_batch_size})
    _, gan, _, _, state, batch = step_inputs(config, data, form, weights=MATCHING)
    return gan, state, uneven_batch(batch)


def run_step(gan, state, batch, update, steps):
    """SGD at rate 1 for D and G: the params move by the raw gradients (no warm-up at 0 hiding them)."""
    tx = optax.sgd(1.0)
    state = state.replace(d=state.d.replace(opt_state=tx.init(state.d.params)),
                          g=state.g.replace(opt_state=tx.init(state.g.params)))
    new_state, metrics = jax.jit(make_gan_step(gan, tx, tx, update, steps))(state, batch, jax.random.PRNGKey(1))
    return state, jax.device_get(new_state), jax.device_get(metrics)


@pytest.mark.parametrize("form, fake_labels, fake_batch_size, update, steps", [
    (ACGAN, "uniform", 8, "simultaneous", 4),  # AC-GAN's D (source + class heads), fewer fakes than rows
    (GANBERT, "uniform", 0, "alternating", 2),  # GAN-BERT's K+1 D; G reads the accumulated D update
    (GANBERT, "batch", 0, "simultaneous", 4),  # the paper's form (configs/acgan_paper.py): one fake a real row
], ids=["acgan", "ganbert_alternating", "paper"])
def test_accumulated_gan_step_equals_the_whole_batch(exact_data, form, fake_labels, fake_batch_size, update, steps):
    gan, state, batch = gan_step_inputs(exact_data, form, fake_labels, fake_batch_size)
    start, whole, whole_metrics = run_step(gan, state, batch, update, 1)
    _, split, split_metrics = run_step(gan, state, batch, update, steps)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE), split.d.params,
                           whole.d.params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE), split.g.params,
                           whole.g.params)
    assert split_metrics.keys() == whole_metrics.keys()
    for name in whole_metrics:
        np.testing.assert_allclose(split_metrics[name], whole_metrics[name], **TOLERANCE, err_msg=name)
    assert not whole_metrics["nonfinite"]
    for term in ("d/supervised", "g/feature_matching", "g/class_feature_matching", "g/class_embedding_matching"):
        assert whole_metrics[term] > 0, term  # the terms that read whole-batch counts or means are in play
    for side in ("d", "g"):  # the step did something, on both sides and in the encoder
        before = jax.tree_util.tree_leaves(getattr(start, side).params)
        after = jax.tree_util.tree_leaves(getattr(whole, side).params)
        assert max(float(np.abs(a - b).max()) for a, b in zip(after, before)) > 1e-4, side
    backbone_moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), whole.d.params["backbone"],
                                            jax.device_get(start.d.params["backbone"]))
    assert max(jax.tree_util.tree_leaves(backbone_moved)) > 1e-6


def test_a_non_finite_micro_batch_skips_the_whole_accumulated_step(exact_data):
    """A token whose embedding is NaN, in row 1 only: micro-batch 0 is finite, micro-batch 1 is not; neither D,
    the encoder nor G moves, and the step's metrics say so."""
    gan, state, batch = gan_step_inputs(exact_data, GANBERT, "uniform")
    token = int(batch["input_ids"].max()) + 1  # in no row of the batch
    batch["input_ids"][1, 0, 1] = token  # [B, sequences, length]
    assert batch["attention_mask"][1, 0, 1] == 1
    assert not (micro_batches(batch, 2)["input_ids"][0] == token).any()  # micro-batch 0 never reads it

    def poison(path, leaf):
        return leaf.at[token].set(np.nan) if "word_embeddings" in jax.tree_util.keystr(path) else leaf

    state = state.replace(d=state.d.replace(params=jax.tree_util.tree_map_with_path(poison, state.d.params)))
    start, new, metrics = run_step(gan, state, batch, "simultaneous", 2)
    assert bool(metrics["nonfinite"])
    start = jax.device_get(start)
    for side in ("d", "g"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, getattr(new, side).params, getattr(start, side).params)
        jax.tree_util.tree_map(np.testing.assert_array_equal, getattr(new, side).opt_state,
                               getattr(start, side).opt_state)


def test_accumulation_config_checks(exact_data):
    """k > 1 is accepted for the GAN's step; its fakes must split into the k micro-batches like its rows."""
    config, _ = exact_data
    config = with_overrides(config.copy_and_resolve_references(), **{"optim.accumulation_steps": 4})
    check_gan_config(config)
    with pytest.raises(ConfigError, match=r"^config.gan.fake_batch_size = 6 does not split into "
                                          r"config.optim.accumulation_steps = 4 micro-batches"):
        check_gan_config(with_overrides(config, **{"gan.fake_batch_size": 6}))
    check_gan_config(with_overrides(config, **{"gan.fake_batch_size": 8}))


def test_the_gan_trainer_runs_accumulated_steps(exact_data, tmp_path):
    """End to end: train_gan passes optim.accumulation_steps to its step and logs finite losses."""
    import json

    from jaxmt.gan.trainer import train_gan

    config, data = exact_data
    config = with_overrides(config.copy_and_resolve_references(),
                            **{"optim.accumulation_steps": 2, "num_steps": 2, "log_every": 1, "eval_every": 0})
    results = train_gan(config, str(tmp_path), data)
    assert results["steps"] == 2 and not results["skipped_nonfinite_steps"]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/g/feature_matching"] for r in logged if "train/g/feature_matching" in r]
    assert len(losses) == 2 and np.isfinite(losses).all()
