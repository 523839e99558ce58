"""Paper A's switches: loss pairing for PCGrad, the cosine STS head, a head learning rate, per-epoch evaluation."""

import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from jaxmt.data.demo import demo_split
from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.data.schema import DEFAULT_TASKS, TaskSpec
from jaxmt.data.sources import task_specs
from jaxmt.errors import ConfigError
from jaxmt.models.heads import apply_head
from jaxmt.optim.pcgrad import find_pcgrad_state, pcgrad
from jaxmt.training import setup
from jaxmt.training.losses import predict, task_loss
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, make_train_step
from jaxmt.training.trainer import epoch_eval_every

SPECS = DEFAULT_TASKS


def no_dropout_bert(tiny_bert):
    """The tiny BERT's config without its internal dropout, so a step is a pure function of the params."""
    bert_config = copy.deepcopy(tiny_bert.config)
    bert_config.hidden_dropout_prob = bert_config.attention_probs_dropout_prob = 0.0
    return bert_config


def demo_batches(tiny_bert, config, specs, steps):
    encoded = setup.encode_splits(config, {t: demo_split(s, "train", 32) for t, s in specs.items()},
                                  tiny_bert.tokenizer)
    sampler = TaskSampler({t: 32 for t in specs}, {t: 8 for t in specs}, "all", 0, steps)
    return [train_batches(encoded, sampler, step, config.data.buckets, tiny_bert.tokenizer.pad_token_id)
            for step in range(steps)]


def run_steps(tiny_bert, config, groups, steps=2, tx=None, bert_config=None, specs=SPECS, weights=None):
    """Params after `steps` train steps of `config` (PCGrad groups `groups`), and the last metrics."""
    model = setup.build_model(config, bert_config or tiny_bert.config, specs)
    per_task = config.optim.gradient_surgery == "pcgrad"
    tx = tx or make_optimizer(config, 10, len(groups or specs) if per_task else 1)
    state = init_state(model, tx, jax.random.PRNGKey(0), tiny_bert.params)
    weights = weights or setup.loss_weights(config, specs)
    step_fn = jax.jit(make_train_step(model, tx, weights, per_task, groups=groups))
    metrics = {}
    for batches in demo_batches(tiny_bert, config, specs, steps):
        state, metrics = step_fn(state, batches, jax.random.PRNGKey(1))
    return state, model, metrics


# --- 1. loss pairing: optim.surgery_groups ------------------------------------------------------------------

def pcgrad_config(tiny_bert_dir, groups=()):
    return tiny_config(tiny_bert_dir, **{"optim.gradient_surgery": "pcgrad", "optim.surgery_groups": groups})


def test_surgery_groups_default_is_a_group_per_task_and_spelling_does_not_matter(tiny_bert_dir):
    config = pcgrad_config(tiny_bert_dir)
    assert setup.surgery_groups(config, SPECS) == (("para",), ("sst",), ("sts",))
    config.optim.surgery_groups = (("sts", "para"), ("sst",))
    assert setup.surgery_groups(config, SPECS) == (("para", "sts"), ("sst",))
    config.optim.surgery_groups = [["sst"], ["para", "sts"]]  # as config.json gives it back
    assert setup.surgery_groups(config, SPECS) == (("para", "sts"), ("sst",))


@pytest.mark.parametrize("groups, message", [
    ((("sst",), ("para",)), "every task must be in exactly one group; sts in none"),
    ((("sst", "para"), ("para", "sts")), "every task must be in exactly one group; para in several"),
    ((("sst",), ("para", "sts", "nli")), "unknown task nli; the run trains para, sst, sts"),
    ((("sst",), ()), "give a tuple of non-empty task tuples"),
    (("sst", "para", "sts"), "give a tuple of non-empty task tuples"),
])
def test_bad_surgery_groups_are_one_line_config_errors(tiny_bert_dir, groups, message):
    config = pcgrad_config(tiny_bert_dir, groups)
    with pytest.raises(ConfigError, match="^config.optim.surgery_groups = ") as err:
        setup.check_config(config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_surgery_groups_need_pcgrad(tiny_bert_dir):
    config = tiny_config(tiny_bert_dir, **{"optim.surgery_groups": (("sst",), ("para", "sts"))})
    with pytest.raises(ConfigError, match="set optim.gradient_surgery='pcgrad'"):
        setup.check_config(config)


TWO_TASKS = {t: SPECS[t] for t in ("sst", "sts")}  # fewer per-task passes to compile


def test_groups_of_one_are_todays_pcgrad_bit_for_bit(tiny_bert, tiny_bert_dir):
    config = pcgrad_config(tiny_bert_dir, (("sts",), ("sst",)))
    config.task_names = tuple(TWO_TASKS)
    today, _, _ = run_steps(tiny_bert, config, groups=None, steps=1, specs=TWO_TASKS)
    groups = setup.surgery_groups(config, TWO_TASKS)
    grouped, _, metrics = run_steps(tiny_bert, config, groups=groups, steps=1, specs=TWO_TASKS)
    chex.assert_trees_all_equal(today.params, grouped.params)
    chex.assert_trees_all_equal(today.opt_state, grouped.opt_state)
    assert {k for k in metrics if k.startswith("grad_norm/")} == {"grad_norm/sst", "grad_norm/sts"}


def test_one_group_of_all_tasks_is_the_summed_loss_update(tiny_bert, tiny_bert_dir):
    config = pcgrad_config(tiny_bert_dir, (("sts", "sst"),))
    config.task_names = tuple(TWO_TASKS)
    groups = setup.surgery_groups(config, TWO_TASKS)
    assert groups == (("sst", "sts"),)
    grouped, _, metrics = run_steps(tiny_bert, config, groups, steps=1, specs=TWO_TASKS)
    config.optim.gradient_surgery, config.optim.surgery_groups = "none", ()
    summed, _, _ = run_steps(tiny_bert, config, None, steps=1, specs=TWO_TASKS)
    chex.assert_trees_all_close(grouped.params, summed.params, rtol=1e-5, atol=1e-7)
    assert int(find_pcgrad_state(grouped.opt_state).num_conflicts) == 0  # one gradient: nothing to project
    assert "grad_norm/sst+sts" in metrics


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)]).astype(np.float64)


def test_two_groups_match_a_hand_computed_pcgrad_step(tiny_bert, tiny_bert_dir):
    """sst against para+sts: the step equals PCGrad's two-task formula on hand-made group gradients.

    The loss weights (the step takes any; configs only >= 0) weight the losses inside a group and
    turn sst's gradient against the others', so that the groups conflict and the projection is tested."""
    config = pcgrad_config(tiny_bert_dir, (("sst",), ("para", "sts")))
    config.model.dropout = 0.0
    groups = setup.surgery_groups(config, SPECS)
    weights = {"sst": -1.0, "para": 0.5, "sts": 2.0}
    tx = optax.chain(pcgrad(2), optax.sgd(1.0))  # no mask, no clipping, update = -(g1' + g2')
    state, model, _ = run_steps(tiny_bert, config, groups, steps=1, tx=tx, bert_config=no_dropout_bert(tiny_bert),
                                weights=weights)

    params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
    (batches,) = demo_batches(tiny_bert, config, SPECS, 1)

    def grad_of(task):
        def loss(p):
            outputs = model.outputs(p, task, batches[task], deterministic=True)
            return task_loss(SPECS[task], outputs, batches[task]["labels"], batches[task]["example_mask"])
        return weights[task] * flat(jax.grad(loss)(params))

    g_ps, g_sst = grad_of("para") + grad_of("sts"), grad_of("sst")  # stacked in this order: ('para', 'sts') < ('sst',)
    dot = g_ps @ g_sst
    assert dot < 0
    projected_ps = g_ps - dot / (g_sst @ g_sst) * g_sst
    projected_sst = g_sst - dot / (g_ps @ g_ps) * g_ps
    expected = flat(params) - (projected_ps + projected_sst)
    np.testing.assert_allclose(flat(state.params), expected, rtol=2e-4, atol=2e-6)
    assert int(find_pcgrad_state(state.opt_state).num_conflicts) == 2


# --- 2. the cosine STS head -------------------------------------------------------------------------------

def cosine_config(tiny_bert_dir, **overrides):
    return tiny_config(tiny_bert_dir, **{"model.pair_mode": "siamese", "tasks.sts.head": "cosine", **overrides})


def test_cosine_head_needs_siamese_pairs_and_a_regression_pair_task(tiny_bert_dir):
    with pytest.raises(ConfigError, match=r"^config.tasks.sts.head='cosine' .*set config.tasks.sts.pair_mode or "
                                          r"config.model.pair_mode to 'siamese' \(or 'triplet'\)$"):
        setup.check_config(cosine_config(tiny_bert_dir, **{"model.pair_mode": "cross"}))
    with pytest.raises(ConfigError, match=r"^config.tasks.sts.head='cosine'"):
        setup.check_config(cosine_config(tiny_bert_dir, **{"tasks.sts.pair_mode": "cross"}))
    with pytest.raises(ConfigError, match=r"config.tasks.sst: task 'sst': head 'cosine' scores sentence pairs"):
        task_specs(cosine_config(tiny_bert_dir, **{"tasks.sst.head": "cosine"}))
    with pytest.raises(ConfigError, match=r"config.tasks.sts.head = 'dot'; expected one of"):
        setup.check_config(cosine_config(tiny_bert_dir, **{"tasks.sts.head": "dot"}))
    setup.check_config(cosine_config(tiny_bert_dir))


def test_a_pair_task_may_encode_its_pairs_its_own_way(tiny_bert, tiny_bert_dir):
    """tasks.<t>.pair_mode overrides model.pair_mode for that task: Quora jointly, STS siamese for the cosine head."""
    config = cosine_config(tiny_bert_dir, **{"model.pair_mode": "cross", "tasks.sts.pair_mode": "siamese"})
    setup.check_config(config)
    specs = task_specs(config)
    assert setup.build_model(config, tiny_bert.config, specs).num_sequences == {"sst": 1, "para": 1, "sts": 2}
    encoded = setup.encode_splits(config, {t: demo_split(s, "train", 8) for t, s in specs.items()}, tiny_bert.tokenizer)
    assert {t: e.num_sequences for t, e in encoded.items()} == {"sst": 1, "para": 1, "sts": 2}
    with pytest.raises(ConfigError, match=r"^config.tasks.para.pair_mode = 'joint'; expected one of"):
        setup.check_config(cosine_config(tiny_bert_dir, **{"tasks.para.pair_mode": "joint"}))


def test_cosine_head_scores_cos_on_the_label_scale_and_predictions_stay_in_range():
    spec = TaskSpec("sts", "regression", is_pair=True, label_min=0.0, label_max=5.0, head="cosine")
    u = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
    v = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    outputs = apply_head({}, spec, jnp.stack([u, v], axis=1))
    np.testing.assert_allclose(outputs, [5.0, 5.0 / np.sqrt(2), 0.0, -5.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predict(spec, outputs), [5.0, 5.0 / np.sqrt(2), 0.0, 0.0], rtol=1e-6, atol=1e-6)


def test_cosine_head_has_no_params_its_gradients_reach_the_encoder_and_training_lowers_its_loss(
        tiny_bert, tiny_bert_dir):
    config = cosine_config(tiny_bert_dir, **{"optim.learning_rate": 1e-2, "optim.warmup_fraction": 0.05,
                                             "model.dropout": 0.0})
    specs = {"sts": task_specs(config)["sts"]}
    model = setup.build_model(config, tiny_bert.config, specs)
    params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
    assert params["heads"]["sts"] == {}
    (batches,) = demo_batches(tiny_bert, config, specs, 1)
    batch = batches["sts"]

    def loss(p):
        return task_loss(specs["sts"], model.outputs(p, "sts", batch), batch["labels"], batch["example_mask"])

    grads = jax.grad(loss)(params)
    encoder_norm = optax.global_norm(grads["backbone"]["encoder"])
    assert np.isfinite(encoder_norm) and encoder_norm > 0
    predictions = np.asarray(predict(specs["sts"], model.outputs(params, "sts", batch)))
    assert predictions.min() >= 0.0 and predictions.max() <= 5.0

    steps = 30
    model_losses = []
    tx = make_optimizer(config, steps, 1)
    state = init_state(model, tx, jax.random.PRNGKey(0), tiny_bert.params)
    step_fn = jax.jit(make_train_step(model, tx, {"sts": 1.0}, per_task_grads=False))
    for batches in demo_batches(tiny_bert, config, specs, steps):
        state, metrics = step_fn(state, batches, jax.random.PRNGKey(1))
        model_losses.append(float(metrics["loss/sts"]))
    assert np.mean(model_losses[-5:]) < 0.8 * np.mean(model_losses[:5]), model_losses


# --- 3. a learning rate of its own for the heads and shared layers -----------------------------------------

def toy_params():
    return {"backbone": {"encoder": {"bert": {"kernel": jnp.ones((2, 2))}}, "shared_0": {"kernel": jnp.ones((2, 2))}},
            "heads": {"sst": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}}


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_head_learning_rate_moves_heads_and_shared_layers_but_not_the_encoder(tiny_bert_dir, surgery):
    config = tiny_config(tiny_bert_dir, **{"optim.learning_rate": 1e-9, "optim.head_learning_rate": 0.1,
                                           "optim.weight_decay": 0.0, "optim.warmup_fraction": 0.0,
                                           "optim.gradient_surgery": surgery, "optim.surgery_scope": "all"})
    params = toy_params()
    tx = make_optimizer(config, 100, 2)
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    if surgery == "pcgrad":
        grads = jax.tree_util.tree_map(lambda g: jnp.stack([g, g]), grads)
        assert isinstance(state[0], type(find_pcgrad_state(state)))  # PCGrad stays first in the chain
    for _ in range(2):  # step 0 is the warm-up's zero learning rate
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    moved = jax.tree_util.tree_map(lambda new, old: float(jnp.max(jnp.abs(new - old))), params, toy_params())
    assert moved["backbone"]["encoder"]["bert"]["kernel"] < 1e-8
    outside_encoder = [moved["backbone"]["shared_0"]["kernel"], *moved["heads"]["sst"].values()]
    assert outside_encoder == pytest.approx([0.1] * 3, rel=0.01)


def test_head_learning_rate_zero_is_one_adamw_for_all(tiny_bert_dir):
    config = tiny_config(tiny_bert_dir)
    params = toy_params()
    state = make_optimizer(config, 100, 3).init(params)
    assert not any(isinstance(s, optax.MultiTransformState) for s in state)


# --- 4. evaluation every so many epochs ---------------------------------------------------------------------

def test_epoch_eval_every_counts_epochs_of_the_largest_task(tiny_bert_dir):
    config = tiny_config(tiny_bert_dir, **{"eval_every_epochs": 0.5})
    sizes = {"sst": 100, "para": 250, "sts": 50}  # batch size 8 each: para's epoch is ceil(250 / 8) = 32 steps
    per_step = {t: float(config.tasks[t].batch_size) for t in sizes}  # what a padded TaskSampler reports
    assert epoch_eval_every(config, sizes, per_step) == 16
    config.eval_every_epochs = 2.0
    assert epoch_eval_every(config, sizes, per_step) == 64
    config.eval_every_epochs = 0.001
    assert epoch_eval_every(config, sizes, per_step) == 1


def test_recipe_is_the_triplet_reading_with_a_pair_encoding_per_task():
    """configs/paper_a.py differs from configs/paper_a_triplet.py (the ablations' base) in the two pair modes only,
    so the ablation table's recipe row is one switch of the reading, as docs/results.md says."""
    import json

    from configs import paper_a, paper_a_triplet
    from jaxmt.checkpointing.workdir import _flatten  # the dotted view the resume check compares configs in

    recipe, triplet = (_flatten(json.loads(c.get_config().to_json())) for c in (paper_a, paper_a_triplet))
    changed = {k: (triplet[k], recipe[k]) for k in recipe if recipe[k] != triplet[k]}
    assert changed == {"tasks.para.pair_mode": ("", "cross"), "tasks.sts.pair_mode": ("", "siamese")}
    assert triplet["model.pair_mode"] == "triplet" and triplet["tasks.sts.head"] == "cosine"
