"""Gradient accumulation (optim.accumulation_steps): k micro-batches give the update of one step over all of
their examples, for every trainer's step, with the NaN guard and the metrics covering the whole step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transformers import BertConfig

from jaxmt.core.accumulation import accumulate, micro_batches
from jaxmt.core.state import TrainState, guarded_update

TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float32: the k micro-batches sum in another order than one batch


def tiny_config(num_layers: int = 2) -> BertConfig:
    """No dropout: micro-batches draw other dropout masks than the whole batch, so only then are they equal."""
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=num_layers, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def one_step(make_step, params, batch, steps, tx):
    """New params and metrics of one step with `steps` micro-batches."""
    state = TrainState.create(params, tx)
    new_state, metrics = jax.jit(make_step(tx, steps))(state, batch, jax.random.PRNGKey(3))
    return jax.device_get(new_state.params), jax.device_get(metrics)


def assert_same_step(make_step, params, batch, steps, tx=None):
    """One step of `make_step(tx, k)` gives the same params and metrics for each k in `steps` as for 1; `tx` is
    SGD at rate 1 unless given (params move by the raw gradient: no warm-up at 0, no normalisation hiding it)."""
    tx = tx or optax.sgd(1.0)
    whole_params, whole_metrics = one_step(make_step, params, batch, 1, tx)
    for k in steps:
        split_params, split_metrics = one_step(make_step, params, batch, k, tx)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE), split_params, whole_params)
        assert split_metrics.keys() == whole_metrics.keys()
        for name in whole_metrics:
            np.testing.assert_allclose(split_metrics[name], whole_metrics[name], **TOLERANCE, err_msg=name)
    assert not whole_metrics["nonfinite"]
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(whole_params),
                                                            jax.tree_util.tree_leaves(params)))
    assert moved > 1e-4  # the step did something
    return whole_metrics


def test_micro_batches_interleave_rows_and_a_bad_split_is_named():
    split = micro_batches({"x": jnp.arange(12).reshape(6, 2)}, 3)["x"]
    assert split.shape == (3, 2, 2)
    np.testing.assert_array_equal(split[1], [[2, 3], [8, 9]])  # rows 1 and 4
    with pytest.raises(ValueError, match="does not split into 4 equal micro-batches"):
        micro_batches({"x": jnp.zeros((6,))}, 4)


def test_one_micro_batch_is_the_function_itself_and_rngs_differ_per_micro_batch():
    rng = jax.random.PRNGKey(0)
    batch = jnp.arange(4.0)
    out = accumulate(lambda p, b, r: (p * b.sum(), r), 2.0, batch, rng, 1)
    assert float(out[0]) == 12.0 and (out[1] == rng).all()
    draws = accumulate(lambda p, b, r: jax.random.uniform(r, (1,)), 0.0, batch, rng, 2)
    expected = sum(jax.random.uniform(jax.random.fold_in(rng, i), (1,)) for i in range(2))
    np.testing.assert_allclose(draws, expected, rtol=1e-6)


def test_a_non_finite_micro_batch_stops_the_whole_update():
    params = {"w": jnp.ones(3)}
    tx = optax.sgd(0.1)
    state = TrainState.create(params, tx)
    batch = jnp.asarray([1.0, 1.0, jnp.nan, 1.0])  # micro-batch 0 gets rows 0 and 2

    def grad_fn(p, micro, rng):
        loss, grads = jax.value_and_grad(lambda q: jnp.sum(q["w"]) * micro.sum())(p)
        return grads, loss

    grads, loss = accumulate(grad_fn, state.params, batch, jax.random.PRNGKey(0), 2)
    new_state, metrics = guarded_update(state, grads, tx, loss)
    assert bool(metrics["nonfinite"])
    np.testing.assert_array_equal(new_state.params["w"], params["w"])
    assert int(new_state.step) == 1


# ---------------------------------------------------------------- pre-training

def pretraining_batch(n: int = 8, length: int = 12, predictions: int = 3) -> dict:
    """Padding rows (example weight 0) and masked MLM slots spread unevenly, so micro-batches count different
    numbers of examples and tokens: a mean of micro-batch means would be wrong."""
    rng = np.random.default_rng(0)
    example_weights = np.asarray([1, 1, 1, 1, 1, 0, 1, 0], np.float32)
    return {"input_ids": rng.integers(5, 40, size=(n, length)).astype(np.int32),
            "token_type_ids": (np.arange(length)[None, :] >= length // 2).repeat(n, 0).astype(np.int32),
            "attention_mask": (np.arange(length)[None, :] < rng.integers(6, length + 1, size=(n, 1))).astype(np.int32),
            "mlm_positions": rng.integers(1, 6, size=(n, predictions)).astype(np.int32),
            "mlm_ids": rng.integers(5, 40, size=(n, predictions)).astype(np.int32),
            "mlm_weights": (rng.random((n, predictions)) < 0.6).astype(np.float32),
            "nsp_labels": rng.integers(0, 2, size=n).astype(np.int32),
            "bigram_labels": rng.integers(0, 2, size=n).astype(np.int32),
            "bigram_moved": (rng.random((n, length)) < 0.2).astype(np.float32),
            "example_weights": example_weights}


def test_pretraining_step_accumulated_equals_the_whole_batch():
    from jaxmt.pretraining.model import HierarchicalBert
    from jaxmt.pretraining.step import init_params, make_train_step

    model = HierarchicalBert(tiny_config(), (("bigram_shift", 1), ("mlm", 2), ("nsp", 2)), "none", "mean",
                             "token_labels")
    batch = pretraining_batch()
    params = init_params(model, jax.random.PRNGKey(0), batch)
    weights = {"mlm": 1.0, "nsp": 0.5, "bigram_shift": 2.0}
    assert_same_step(lambda tx, k: make_train_step(model, tx, weights, accumulation_steps=k), params, batch, (4,))


# ---------------------------------------------------------------- QA

def qa_batch(n: int = 8, length: int = 12) -> dict:
    """Windows of a 4-token question and an 8-token context, answers inside the context."""
    rng = np.random.default_rng(1)
    context = (np.arange(length)[None, :] >= 4).repeat(n, 0).astype(np.int32)
    return {"input_ids": rng.integers(5, 40, size=(n, length)).astype(np.int32),
            "attention_mask": np.ones((n, length), np.int32), "token_type_ids": context, "context_mask": context,
            "start_positions": rng.integers(4, 8, size=n).astype(np.int32),
            "end_positions": rng.integers(8, 12, size=n).astype(np.int32)}


def test_qa_step_accumulated_equals_the_whole_batch():
    from jaxmt.downstream.qa_model import SpanModel
    from jaxmt.downstream.qa_train import make_qa_train_step

    model = SpanModel.build(tiny_config())
    params = model.init(jax.random.PRNGKey(0))
    assert_same_step(lambda tx, k: make_qa_train_step(model, tx, accumulation_steps=k), params, qa_batch(), (2,))


# ---------------------------------------------------------------- multitask fine-tuning

@pytest.mark.parametrize("overrides", [
    {},  # losses summed: one gradient
    {"optim.gradient_surgery": "pcgrad", "optim.surgery_groups": (("sst",), ("para", "sts"))},  # loss pairing
], ids=["sum", "pcgrad_pairing"])
def test_multitask_packed_step_accumulated_equals_the_whole_batch(tiny_bert, tiny_bert_dir, overrides):
    """Packed batches of 4 row groups (examples per group differ), 2 micro-batches of 2 groups each; with PCGrad
    the group gradients are accumulated and projected once (the metrics' per-group norms and cosines agree)."""
    from conftest import tiny_config as tiny_run_config

    from jaxmt.data.packing import PackedTaskSampler, layout_for
    from jaxmt.data.sources import load_splits, task_specs
    from jaxmt.optim.pcgrad import pcgrad
    from jaxmt.training import setup
    from jaxmt.training.optimizer import surgery_mask
    from jaxmt.training.step import make_train_step

    config = tiny_run_config(tiny_bert_dir, **{"model.dropout": 0.0, **overrides})
    specs = task_specs(config)
    splits = setup.encode_splits(config, load_splits(config, specs, "train"), tiny_bert.tokenizer)
    bert_config = tiny_bert.config.__class__(**{**tiny_bert.config.to_dict(), "hidden_dropout_prob": 0.0,
                                                "attention_probs_dropout_prob": 0.0})
    model = setup.build_model(config, bert_config, specs)
    layouts = {t: layout_for(s, 8, 64, groups=4) for t, s in splits.items()}
    sampler = PackedTaskSampler(splits, layouts, {t: 8 for t in splits}, "all", 0, 4)
    batches = {t: sampler.batch(t, 1, tiny_bert.tokenizer.pad_token_id) for t in splits}
    for task, batch in batches.items():  # drop examples from group 0 (micro-batch 0): the micro-batches count 3 and 4
        slots = batch["example_mask"].reshape(4, -1)
        assert slots.sum(1).tolist() == [2, 2, 2, 2]
        slots[0, np.flatnonzero(slots[0])[:1 + (task == "para")]] = 0
    params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
    per_task = config.optim.gradient_surgery == "pcgrad"
    groups = setup.surgery_groups(config, specs) if per_task else None
    tx = optax.sgd(1.0)
    if per_task:  # the surgery as make_optimizer sets it up, then the raw projected gradient
        tx = optax.chain(pcgrad(len(groups), seed=jax.random.PRNGKey(7),
                                mask=lambda p: surgery_mask(p, config.optim.surgery_scope)), tx)
    whole_metrics = assert_same_step(
        lambda tx, k: make_train_step(model, tx, setup.loss_weights(config, specs), per_task, groups=groups,
                                      accumulation_steps=k), params, batches, (2,), tx)
    if per_task:
        assert {"grad_norm/sst", "grad_norm/para+sts"} <= whole_metrics.keys()


def test_batches_that_do_not_split_are_one_line_errors():
    from configs import default
    from jaxmt.config_checks import check_accumulation
    from jaxmt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^config.tasks.sst.batch_size = 8 does not split into "
                                          r"config.optim.accumulation_steps = 3 micro-batches over 2 data-parallel"):
        check_accumulation(8, 3, 2, "tasks.sst.batch_size")
    check_accumulation(8, 2, 2, "batch_size")
    assert default.get_config().optim.accumulation_steps == 1  # the GAN's step: tests/test_gan_accumulation.py


def test_the_multitask_trainer_runs_accumulated_packed_steps(tiny_bert_dir, tmp_path, caplog):
    """End to end: the trainer packs k times the row groups (here 2 for one device) and trains on them."""
    import json
    import logging

    from conftest import tiny_config as tiny_run_config

    from jaxmt.training.trainer import train_and_evaluate

    config = tiny_run_config(tiny_bert_dir, **{"optim.accumulation_steps": 2, "num_steps": 2, "eval_every": 0,
                                               "checkpoint_every": 2, "log_every": 1})
    with caplog.at_level(logging.INFO, logger="jaxmt.training.trainer"):
        assert train_and_evaluate(config, str(tmp_path))["steps"] == 2
    assert "'sst': '2x" in caplog.text  # 2 row groups a step: one a micro-batch
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "train/loss/total" in r] == [1, 2]
    assert all(np.isfinite(r["train/loss/total"]) for r in logged if "train/loss/total" in r)


PMAP_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}]
import jax, numpy as np, optax
from test_accumulation import multitask_setup
from jaxmt.core.state import TrainState
from jaxmt.training.step import make_train_step
model, params, batches, weights, groups, tx = multitask_setup({model!r})
halves = jax.tree_util.tree_map(lambda x: x.reshape((2, x.shape[0] // 2) + x.shape[1:]), batches)
out = []
for k in (1, 2):
    step = make_train_step(model, tx, weights, True, "batch", groups=groups, accumulation_steps=k)
    state, metrics = jax.pmap(step, axis_name="batch", in_axes=(None, 0, None), out_axes=None)(
        TrainState.create(params, tx), halves, jax.random.PRNGKey(3))
    out.append(jax.device_get((state.params, metrics)))
for a, b in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(out[1])):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-6)
print("same")
"""


def multitask_setup(model_dir):
    """PCGrad with loss pairing on packed batches of 4 row groups (group 0 one example short): model, params,
    batches, loss weights, groups and optimizer (the surgery, then SGD at rate 1)."""
    from conftest import tiny_config as tiny_run_config

    from jaxmt.data.packing import PackedTaskSampler, layout_for
    from jaxmt.data.sources import load_splits, task_specs
    from jaxmt.models.pretrained import load_pretrained
    from jaxmt.optim.pcgrad import pcgrad
    from jaxmt.training import setup

    config = tiny_run_config(model_dir, **{"model.dropout": 0.0, "optim.gradient_surgery": "pcgrad",
                                           "optim.surgery_groups": (("sst",), ("para", "sts"))})
    pretrained = load_pretrained(str(model_dir))
    specs = task_specs(config)
    splits = setup.encode_splits(config, load_splits(config, specs, "train"), pretrained.tokenizer)
    model = setup.build_model(config, pretrained.config, specs)
    sampler = PackedTaskSampler(splits, {t: layout_for(s, 8, 64, groups=4) for t, s in splits.items()},
                                {t: 8 for t in splits}, "all", 0, 4)
    batches = {t: sampler.batch(t, 1, pretrained.tokenizer.pad_token_id) for t in splits}
    batches["sst"]["example_mask"][np.flatnonzero(batches["sst"]["example_mask"])[0]] = 0
    groups = setup.surgery_groups(config, specs)
    tx = optax.chain(pcgrad(len(groups), seed=jax.random.PRNGKey(7)), optax.sgd(1.0))
    return (model, model.init(jax.random.PRNGKey(0), pretrained.params), batches, setup.loss_weights(config, specs),
            groups, tx)


def test_pmap_accumulates_each_devices_micro_batches_into_the_same_update(tmp_path):
    """Two emulated devices under pmap, 2 row groups each, one a micro-batch: losses are shares of the global
    example count and the gradients are all-reduced once after the micro-batches; the update equals k = 1's."""
    import os
    import subprocess
    import sys

    from conftest import ROOT, demo_words

    from jaxmt.models.pretrained import write_random_bert

    model_dir = write_random_bert(tmp_path / "bert", demo_words(), seed=0, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    script = PMAP_SCRIPT.format(tests=str(ROOT / "tests"), model=str(model_dir))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("same"), proc.stderr[-3000:]
