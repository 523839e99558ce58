"""AC-GAN-BERT: network shapes, gradient isolation of G and D, the labeled subset, a tiny demo run, the sweep table."""

import copy
import csv
import dataclasses
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, with_overrides

from jaxmt.errors import ConfigError
from jaxmt.gan.build import build_gan, check_gan_config, generator_optimizer, load_gan_data
from jaxmt.gan.collapse import diversity, mean_pairwise_distance
from jaxmt.gan.losses import LossWeights, generator_losses
from jaxmt.gan.networks import ACGAN, FORMS, GANBERT, Discriminator, Generator
from jaxmt.gan.semi_supervised import SemiSupervisedSampler, semi_supervised_batch, stratified_labeled_subset
from jaxmt.gan.step import init_gan_state, make_gan_step
from jaxmt.training.optimizer import make_optimizer

K, D = 5, 32
NO_MODEL = "model-not-loaded"  # for tests that only check configs: nothing reads the model


def gan_config(model_dir, **overrides):
    """configs/acgan.py shrunk like conftest.tiny_config: tiny model, short sequences, one bucket (one compile)."""
    from configs import acgan

    base = tiny_config(model_dir)
    config = acgan.get_config()
    for section in ("data", "model"):
        config[section].update(base[section].to_dict())
    config.task_names = ("sst",)
    config.data.buckets = (32,)
    config.data.max_length = 32
    config.data.max_train_examples = 400
    config.data.max_eval_examples = 100
    config.tasks.sst.batch_size = 16
    config.eval_batch_size = 32
    config.gan.save_checkpoints = False
    config.gan.collapse_examples = 100
    config.gan.collapse_fakes_per_class = 20
    return with_overrides(config, **overrides)


@pytest.mark.parametrize("form", FORMS)
def test_generator_and_discriminator_shapes_and_dtypes(form):
    g = Generator(num_classes=K, feature_dim=D, noise_dim=100, hidden=(48, 40))
    d = Discriminator(num_classes=K, feature_dim=D, form=form, hidden=(24,))
    g_params, d_params = g.init(jax.random.PRNGKey(0)), d.init(jax.random.PRNGKey(1))

    @jax.jit  # one compile instead of many eager ops
    def run(g_params, d_params, real):
        noise = g.sample_noise(jax.random.PRNGKey(2), 6)
        fake = g(g_params, noise, jnp.arange(6) % K, jax.random.PRNGKey(3), deterministic=False)
        outputs, feats = d(d_params, jnp.concatenate([real.astype(jnp.float32), fake]), jax.random.PRNGKey(5),
                           deterministic=False)
        return noise, fake, outputs, feats, d.class_logits(outputs), d.log_real_and_fake(outputs)

    real = jax.random.normal(jax.random.PRNGKey(4), (4, D), jnp.bfloat16)
    noise, fake, outputs, feats, class_logits, (log_real, log_fake) = run(g_params, d_params, real)
    chex.assert_shape(noise, (6, 100))
    chex.assert_shape(fake, (6, D))
    chex.assert_type(fake, jnp.float32)
    chex.assert_shape(feats, (10, 24))
    if form == GANBERT:
        chex.assert_shape(outputs["logits"], (10, K + 1))
    else:
        chex.assert_shape([outputs["source"], outputs["classes"]], [(10,), (10, K)])
    chex.assert_shape(class_logits, (10, K))
    chex.assert_trees_all_close(jnp.exp(log_real) + jnp.exp(log_fake), jnp.ones(10), atol=1e-5)
    chex.assert_type([*jax.tree_util.tree_leaves(outputs), feats, log_real], jnp.float32)
    labels = jnp.arange(6) % K
    # deterministic: no dropout, so no rng needed and the same output twice
    chex.assert_trees_all_equal(g(g_params, noise, labels), g(g_params, noise, labels))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """conftest's tiny BERT with one layer instead of two: every jitted GAN step compiles in half the time."""
    from conftest import demo_words

    from jaxmt.models.pretrained import write_random_bert

    model_dir = write_random_bert(tmp_path_factory.mktemp("one_layer_bert"), demo_words(), seed=0,
                                  num_hidden_layers=1)
    config = gan_config(model_dir, **{"gan.labeled_fraction": 0.25})
    return config, load_gan_data(config)


def step_inputs(config, data, form, weights=None, bert_config=None):
    config = config.copy_and_resolve_references()
    config.gan.form = form
    config.optim.weight_decay = 0.0  # so a zero gradient means an unchanged param
    for key, value in (weights or {}).items():
        config.gan.weights[key] = value
    gan = build_gan(config, bert_config or data.pretrained.config, data.spec)
    d_tx, g_tx = make_optimizer(config, 10, 1), generator_optimizer(config, 10)
    state = init_gan_state(gan, d_tx, g_tx, jax.random.PRNGKey(0), data.pretrained.params)
    sampler = SemiSupervisedSampler.build(len(data.train.data), data.labeled, 16, 4, 0)
    idx, mask = sampler.indices(0)
    batch = semi_supervised_batch(data.train, idx, mask, config.data.buckets, data.pad_id)
    return config, gan, d_tx, g_tx, state, batch


def nonzero_leaves(tree):
    return sum(int(jnp.any(x != 0)) for x in jax.tree_util.tree_leaves(tree))


def test_each_loss_has_gradient_only_for_its_own_params(demo_data):
    config, data = demo_data
    _, gan, _, _, state, batch = step_inputs(config, data, GANBERT)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    d_params, g_params = state.d.params, state.g.params
    loss_d = lambda dp, gp: gan.d_loss(dp, gp, batch, *keys)[0]  # noqa: E731
    grad_d_wrt_d, grad_d_wrt_g = jax.jit(jax.grad(loss_d, argnums=(0, 1)))(d_params, g_params)
    real = jax.random.normal(jax.random.PRNGKey(2), (16, gan.generator.feature_dim))
    loss_g = lambda gp, dp, r: gan.g_loss(gp, dp, r, batch, *keys)[0]  # noqa: E731
    grad_g_wrt_g, grad_g_wrt_d, grad_g_wrt_real = jax.jit(jax.grad(loss_g, argnums=(0, 1, 2)))(g_params, d_params,
                                                                                                real)
    assert nonzero_leaves(grad_d_wrt_g) == 0 and nonzero_leaves(grad_g_wrt_d) == 0
    assert not np.any(np.asarray(grad_g_wrt_real))  # the encoder cannot learn from G's loss either
    assert nonzero_leaves(grad_d_wrt_d["discriminator"]) == len(jax.tree_util.tree_leaves(d_params["discriminator"]))
    assert nonzero_leaves(grad_d_wrt_d["backbone"]) > 0
    assert nonzero_leaves(grad_g_wrt_g) == len(jax.tree_util.tree_leaves(g_params))


D_WEIGHTS = ("d_supervised", "d_unsupervised", "d_fake_class")
G_WEIGHTS = ("g_fool", "g_feature_matching", "g_class", "g_class_feature_matching", "g_class_embedding_matching")


def test_step_leaves_the_silenced_side_unchanged(demo_data):
    """With one side's loss weights all zero, a step must not move that side at all: whatever it would
    learn could only leak from the other side's loss. Alternating order (G reads the freshly updated D);
    the weights are a traced argument, so both cases share one compiled step."""
    config, data = demo_data
    _, gan, d_tx, g_tx, state, batch = step_inputs(config, data, ACGAN)

    @jax.jit
    def step(state, weights, rng):
        return make_gan_step(dataclasses.replace(gan, weights=weights), d_tx, g_tx, "alternating")(state, batch, rng)

    for silenced in ("d", "g"):
        weights = gan.weights.replace(**{k: 0.0 for k in (D_WEIGHTS if silenced == "d" else G_WEIGHTS)})
        new = state
        for s in range(3):  # past the first step, when the warm-up learning rate of encoder+D is still 0
            new, metrics = step(new, weights, jax.random.PRNGKey(s))
        assert not bool(metrics["nonfinite"])
        frozen, moved = ("d", "g") if silenced == "d" else ("g", "d")
        chex.assert_trees_all_equal(getattr(new, frozen).params, getattr(state, frozen).params)
        changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), getattr(new, moved).params,
                                         getattr(state, moved).params)
        assert all(jax.tree_util.tree_leaves(changed if moved == "g" else changed["discriminator"])), silenced
        assert any(jax.tree_util.tree_leaves(changed["backbone"] if moved == "d" else changed))


@dataclasses.dataclass(frozen=True)
class InputRecordingDiscriminator(Discriminator):
    """D that keeps what its layers receive (the rows after its input dropout), for the tests to read."""

    seen: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def input_dropout(self, x, rng, deterministic):
        out = super().input_dropout(x, rng, deterministic)
        self.seen.append(out)
        return out


def d_inputs_in_training(gan, state, batch):
    """rng -> (real rows, fake rows) as D's layers receive them in D's training loss."""
    spy = InputRecordingDiscriminator(**{f.name: getattr(gan.discriminator, f.name)
                                         for f in dataclasses.fields(Discriminator)})
    spied, num_real = dataclasses.replace(gan, discriminator=spy), batch["input_ids"].shape[0]

    @jax.jit
    def run(rng):
        spy.seen.clear()
        spied.d_loss(state.d.params, state.g.params, batch, *jax.random.split(rng))
        (rows,) = spy.seen
        return rows[:num_real], rows[num_real:]

    return run


def test_real_and_fake_rows_reach_d_with_the_same_share_of_dropped_features(demo_data):
    """Real embeddings must not pass a dropout that fakes skip: a real row would then show about twice
    the zeroed features of a fake one (19% against 10%), which tells D real from fake."""
    config, data = demo_data
    rate = 0.1
    config = with_overrides(config.copy_and_resolve_references(), **{"model.dropout": rate, "gan.d_dropout": rate})
    _, gan, _, _, state, batch = step_inputs(config, data, GANBERT)
    run = d_inputs_in_training(gan, state, batch)
    zeros, counts = np.zeros(2), np.zeros(2)
    for s in range(20):
        for side, rows in enumerate(run(jax.random.PRNGKey(s))):
            zeros[side] += int(jnp.sum(rows == 0))
            counts[side] += rows.size
    share = zeros / counts
    pooled = zeros.sum() / counts.sum()
    standard_error = np.sqrt(pooled * (1 - pooled) * (1 / counts[0] + 1 / counts[1]))
    assert abs(share[0] - share[1]) < 4 * standard_error, share
    assert np.all(np.abs(share - rate) < 0.02), share


def test_d_reads_real_rows_in_training_as_evaluation_embeds_them(demo_data):
    """With the encoder's own dropout and D's off, only the backbone's output dropout (0.3 here) could
    make the real rows D trains on differ from the embeddings evaluation classifies: they must not."""
    config, data = demo_data
    bert_config = copy.deepcopy(data.pretrained.config)
    bert_config.hidden_dropout_prob = bert_config.attention_probs_dropout_prob = 0.0
    config = with_overrides(config.copy_and_resolve_references(), **{"model.dropout": 0.3, "gan.d_dropout": 0.0})
    _, gan, _, _, state, batch = step_inputs(config, data, GANBERT, bert_config=bert_config)
    real, _ = d_inputs_in_training(gan, state, batch)(jax.random.PRNGKey(0))
    at_evaluation = jax.jit(lambda p: gan.real_embeddings(p, batch, None, True))(state.d.params)
    np.testing.assert_allclose(np.asarray(real), np.asarray(at_evaluation), rtol=1e-5, atol=1e-6)


def test_ganbert_form_is_pure_gan_bert_unless_a_g_class_weight_is_set():
    weights = gan_config(NO_MODEL).gan.weights
    assert weights.g_class is None  # unset: chosen by the form
    pure, conditional = LossWeights.from_config(weights, GANBERT), LossWeights.from_config(weights, ACGAN)
    assert (pure.g_class, conditional.g_class) == (0.0, 1.0)
    d = Discriminator(num_classes=K, feature_dim=D, form=GANBERT, hidden=(8,))

    @jax.jit  # one compile instead of many eager ops
    def g_losses(weights):
        fake = jax.random.normal(jax.random.PRNGKey(1), (6, D))
        fake_out, fake_feats = d(d.init(jax.random.PRNGKey(0)), fake)
        real = jax.random.normal(jax.random.PRNGKey(3), (4, D))
        real_feats = jax.random.normal(jax.random.PRNGKey(2), (4, 8))
        return generator_losses(d, fake_out, fake_feats, real_feats, jnp.ones(4), jnp.arange(6) % K, weights,
                                jnp.arange(4) % K, jnp.ones(4), real, fake)

    total, terms = g_losses(pure)
    assert float(terms["class"]) > 0 and float(total) == pytest.approx(float(terms["fool"] + terms["feature_matching"]))
    asked = gan_config(NO_MODEL, **{"gan.form": GANBERT, "gan.weights.g_class": 0.5})
    check_gan_config(asked)
    assert LossWeights.from_config(asked.gan.weights, GANBERT).g_class == 0.5
    with pytest.raises(ConfigError, match="g_class"):
        check_gan_config(gan_config(NO_MODEL, **{"gan.weights.g_class": -1.0}))


def test_labeled_subset_is_stratified_seeded_fixed_and_nested():
    rng = np.random.default_rng(0)
    labels = rng.choice(K, size=2000, p=[0.1, 0.3, 0.2, 0.25, 0.15])
    counts = np.bincount(labels, minlength=K)
    subset = stratified_labeled_subset(labels, 0.1, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[subset], minlength=K), np.round(0.1 * counts).astype(int))
    np.testing.assert_array_equal(subset, stratified_labeled_subset(labels.copy(), 0.1, seed=3))  # fixed
    assert not np.array_equal(subset, stratified_labeled_subset(labels, 0.1, seed=4))  # seeded
    assert set(stratified_labeled_subset(labels, 0.05, seed=3)) <= set(subset)  # nested
    assert len(stratified_labeled_subset(labels, 1.0, seed=3)) == len(labels)
    tiny = stratified_labeled_subset(labels, 0.001, seed=3)
    assert sorted(set(labels[tiny])) == list(range(K))  # every class keeps at least one label
    with pytest.raises(ConfigError, match="labeled_fraction"):
        stratified_labeled_subset(labels, 0.0, seed=3)


def test_batches_oversample_labels_and_hide_the_unlabeled_ones(demo_data):
    _, data = demo_data
    sampler = SemiSupervisedSampler.build(len(data.train.data), data.labeled, 16, 4, seed=0)
    assert sampler.num_labeled == 4  # the natural share (25% of 16) is 4 as well
    sparse = SemiSupervisedSampler.build(1000, np.arange(10), 16, 4, seed=0)
    assert sparse.num_labeled == 4  # 1% labeled still gives 4 labeled rows a batch
    labeled = set(data.labeled.tolist())
    for step in (0, 7, 40):  # 40 x 4 = 160 > 100 labeled: the pool wraps into a new epoch
        idx, mask = sampler.indices(step)
        np.testing.assert_array_equal(np.asarray([i in labeled for i in idx]), mask > 0)
        batch = semi_supervised_batch(data.train, idx, mask, (32,), data.pad_id)
        np.testing.assert_array_equal(batch["label_mask"], mask)
        np.testing.assert_array_equal(batch["labels"][mask > 0], data.train.data.labels[idx[mask > 0]])
        assert not batch["labels"][mask == 0].any()
    np.testing.assert_array_equal(sampler.indices(7)[0], sampler.indices(7)[0])  # a pure function of the step
    full = SemiSupervisedSampler.build(50, np.arange(50), 16, 4, seed=0)
    assert full.num_labeled == 16 and full.indices(3)[1].all()


def test_config_checks():
    check_gan_config(gan_config(NO_MODEL))
    for key, value, message in (("gan.form", "wgan", "gan.form"), ("gan.update_order", "both", "update_order"),
                                ("gan.labeled_fraction", 1.5, "labeled_fraction"), ("gan.d_layers", 0, "d_layers"),
                                ("task_names", ("sst", "para"), "one classification")):
        with pytest.raises(ConfigError, match=message):
            check_gan_config(gan_config(NO_MODEL, **{key: value}))
    with pytest.raises(ConfigError, match="single-sentence classification"):
        check_gan_config(gan_config(NO_MODEL, task_names=("sts",)))


def test_diversity_detects_collapse():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(100, 8))
    y = np.arange(100) % 4
    assert mean_pairwise_distance(np.ones((5, 8))) == 0.0
    collapsed = rng.normal(size=(4, 8))[y]  # one output per class, whatever the noise
    assert diversity(real, y, collapsed + 1e-3 * rng.normal(size=(100, 8)), y, 4)["diversity_ratio"] < 0.01
    assert diversity(real, y, rng.normal(size=(100, 8)), y, 4)["diversity_ratio"] == pytest.approx(1.0, abs=0.1)


def test_tiny_demo_run_lowers_supervised_loss_without_collapse(demo_data, tmp_path):
    from jaxmt.gan.trainer import train_gan

    config, data = demo_data
    config = config.copy_and_resolve_references()
    config.num_steps, config.log_every = 60, 20
    config.model.dropout = config.gan.d_dropout = 0.0  # a clean signal: 60 steps must show the loss falling
    config.optim.learning_rate = 1e-2
    config.optim.warmup_fraction = 0.05
    config.gan.g_learning_rate = 1e-3
    results = train_gan(config, str(tmp_path), data)
    first, last = results["first_losses"], results["last_losses"]
    assert last["d/supervised"] < 0.8 * first["d/supervised"], (first["d/supervised"], last["d/supervised"])
    collapse = results["collapse"]
    assert collapse["diversity_ratio_min"] > 0.2, collapse
    assert 0.0 <= collapse["class_fidelity"] <= 1.0
    assert 0.0 <= collapse["d_class_fidelity"] <= 1.0  # share of fakes D's own class head gives their class
    assert results["demo_data"] and results["labeled_examples"] == len(data.labeled) == 100
    assert 0.0 <= results["dev_accuracy"] <= 1.0
    assert os.path.getsize(tmp_path / "pca.png") > 0
    logged = open(tmp_path / "metrics.jsonl").read()
    assert "collapse/class_fidelity" in logged and "dev/accuracy" in logged and "train/g/feature_matching" in logged


def hand_made_rows(accuracies: dict) -> list[dict]:
    """Sweep rows from {(fraction, method): [dev accuracy a seed]}."""
    from jaxmt.gan.fractions import COLUMNS

    return [dict.fromkeys(COLUMNS, "") | {
        "labeled_fraction": fraction, "method": method, "seed": seed, "dev_accuracy": acc, "steps": 10,
        "epochs": 0.5, "labeled_examples": 20, "train_seconds": 3.0,
        **({} if method == "baseline" else {"form": method, "class_fidelity": 0.2 + 0.1 * seed,
                                             "diversity_ratio": 1.0})}
        for (fraction, method), values in accuracies.items() for seed, acc in enumerate(values)]


def test_sweep_table_gives_mean_std_over_seeds_and_marks_gaps_beyond_noise(tmp_path):
    from jaxmt.gan.fractions import delta_cell, markdown_table, write_table

    rows = hand_made_rows({
        (0.05, "baseline"): [0.30, 0.31, 0.29],
        (0.05, "acgan"): [0.40, 0.41, 0.39],  # +0.10, standard error 0.008: beyond noise
        (0.05, "ganbert"): [0.28, 0.36, 0.32],  # +0.02, standard error 0.024: within it
        (1.0, "baseline"): [0.50],
        (1.0, "acgan"): [0.60],  # one seed: never marked
        (1.0, "ganbert"): [0.45],
    })
    table = markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 0.05 | 20 | 10 (0.5) |") and lines[3].startswith("| 1 |")
    assert lines[0].count("dev acc") == 3 and "Δ AC-GAN-BERT − baseline" in lines[0]
    assert "GAN-BERT class fidelity" in lines[0]
    for cell in ("0.300 ± 0.010 (3)", "0.400 ± 0.010 (3)", "0.320 ± 0.040 (3)", "+0.100*", "+0.020 |",
                 "0.300 ± 0.100 (3)", "1.00 ± 0.00 (3)"):
        assert cell in lines[2], (cell, lines[2])
    for cell in ("0.500 (1)", "+0.100 |", "-0.050 |"):
        assert cell in lines[3], (cell, lines[3])
    assert "*" not in lines[3]
    assert delta_cell((0.4, 0.01, 3), None) == "–"
    assert delta_cell((0.31, 0.0, 2), (0.30, 0.0, 2)) == "+0.010*"  # no spread: any gap exceeds it
    paths = write_table(rows, str(tmp_path))
    with open(paths["csv"]) as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and written[0]["seed"] == "0" and written[3]["form"] == "acgan"
    assert "Welch" in open(paths["md"]).read()
    assert os.path.getsize(paths["png"]) > 0
    only_gan = markdown_table(hand_made_rows({(0.1, "ganbert"): [0.3, 0.4]}))  # no baseline: no Δ column
    assert "Δ" not in only_gan and "0.350 ± 0.071 (2)" in only_gan


def test_epochs_become_steps_over_the_whole_training_file():
    from jaxmt.gan.fractions import steps_for_epochs

    assert steps_for_epochs(1, 7544, 16) == 472  # the CS224N SST training file at configs/acgan.py's batch
    assert steps_for_epochs(2, 32, 16) == 4
    assert steps_for_epochs(0.1, 160, 16) == 1  # not 2 from 1.0000000000000002
    assert steps_for_epochs(0.001, 100, 16) == 1


def test_sweep_rejects_unknown_methods_and_bad_epochs(tmp_path):
    from jaxmt.gan.fractions import run_sweep

    config = gan_config(NO_MODEL)
    expected = (r"unknown \['wgan'\]; expected a subset of "
                r"\['acgan', 'baseline', 'baseline_reference', 'ganbert', 'paper'\]")
    with pytest.raises(ConfigError, match=expected):
        run_sweep(config, str(tmp_path), [0.1], ("acgan", "wgan"))
    with pytest.raises(ConfigError, match="--methods"):
        run_sweep(config, str(tmp_path), [0.1], ())
    for epochs in ({"epochs": -1.0}, {"reference_epochs": -3.0}):
        with pytest.raises(ConfigError, match="--epochs"):
            run_sweep(config, str(tmp_path), [0.1], ("acgan",), **epochs)
    assert not os.listdir(tmp_path)


def recording_trainer(calls: list, method: str):
    """A stand-in trainer: records what the sweep hands it and writes a results.json as the real one does."""
    from jaxmt.training import loop

    def train(config, workdir, data):
        calls.append(dict(method=method, workdir=workdir, config=config, labeled=tuple(data.labeled.tolist())))
        os.makedirs(workdir, exist_ok=True)
        results = {"method": config.gan.method, "labeled_fraction": config.gan.labeled_fraction,
                   "labeled_examples": len(data.labeled), "train_examples": len(data.train.data),
                   "steps": config.num_steps, "batch_size": config.tasks.sst.batch_size,
                   "dev_accuracy": 0.2 + 0.01 * config.seed}
        if method == "gan":
            results |= {"form": config.gan.form, "collapse": {"class_fidelity": 0.5, "diversity_ratio": 0.9}}
        loop.write_results(workdir, results)
        return results

    return train


def test_sweep_seeds_get_own_runs_and_subsets_shared_by_the_methods_and_resume(demo_data, tmp_path, monkeypatch):
    """The sweep's bookkeeping with stand-in trainers (no training): run dirs, seeds, subsets, forms,
    --epochs, and a second call that trains only the runs not finished yet."""
    import jaxmt.gan.baseline
    import jaxmt.gan.build
    import jaxmt.gan.trainer
    from jaxmt.gan.fractions import run_sweep, steps_for_epochs

    config, data = demo_data
    calls = []
    monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: data)
    monkeypatch.setattr(jaxmt.gan.trainer, "train_gan", recording_trainer(calls, "gan"))
    monkeypatch.setattr(jaxmt.gan.baseline, "train_baseline", recording_trainer(calls, "baseline"))
    methods = ("acgan", "ganbert", "baseline")
    rows = run_sweep(config, str(tmp_path), [0.25], methods, seeds=[0, 1], epochs=2.0)
    steps = steps_for_epochs(2.0, len(data.train.data), 16)
    assert steps == -(-2 * len(data.train.data) // 16)
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for s in (0, 1) for m in methods]
    assert {c["workdir"] for c in calls} == {str(tmp_path / "fraction_0.25" / m / f"seed_{s}")
                                             for m in methods for s in (0, 1)}
    for call in calls:
        seed = call["config"].seed
        assert call["workdir"].endswith(f"seed_{seed}") and call["config"].num_steps == steps
        assert call["labeled"] == tuple(stratified_labeled_subset(data.train.data.labels, 0.25, seed).tolist())
        gan = call["config"].gan
        method = call["workdir"].split(os.sep)[-2]
        assert (gan.method, gan.form if method != "baseline" else None) == {
            "acgan": ("acgan", "acgan"), "ganbert": ("acgan", "ganbert"), "baseline": ("baseline", None)}[method]
        assert gan.weights.g_class is None and gan.labeled_fraction == 0.25 and not gan.save_checkpoints
    subsets = {call["config"].seed: set() for call in calls}
    for call in calls:
        subsets[call["config"].seed].add(call["labeled"])
    assert all(len(s) == 1 for s in subsets.values()) and subsets[0] != subsets[1]
    assert {r["epochs"] for r in rows} == {round(steps * 16 / len(data.train.data), 3)}
    assert {r["form"] for r in rows} == {"acgan", "ganbert", ""}
    assert "0.205 ± 0.007 (2)" in open(tmp_path / "results.md").read()

    calls.clear()  # a later session adds a seed: only its runs train
    rows = run_sweep(config, str(tmp_path), [0.25], methods, seeds=[0, 1, 2], epochs=2.0)
    assert sorted(c["workdir"] for c in calls) == sorted(str(tmp_path / "fraction_0.25" / m / "seed_2")
                                                         for m in methods)
    assert len(rows) == 9 and "(3)" in open(tmp_path / "results.md").read()
    calls.clear()
    assert len(run_sweep(config, str(tmp_path), [0.25], methods, seeds=[0, 1, 2], epochs=2.0)) == 9
    assert not calls


def test_sweep_trains_gan_bert_and_the_baseline_through_the_real_trainers(demo_data, tmp_path, monkeypatch):
    """Two real steps a run through the sweep: GAN-BERT is the GAN trainer with the pure form (g_class 0)."""
    import jaxmt.gan.build
    from jaxmt.gan.fractions import run_sweep

    config, data = demo_data
    monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: data)  # tokenized once a module
    config = with_overrides(config.copy_and_resolve_references(), num_steps=2, log_every=1)
    rows = run_sweep(config, str(tmp_path), [0.25], ("ganbert", "baseline"), seeds=[3])
    assert [(r["method"], r["form"], r["seed"], r["steps"], r["labeled_examples"]) for r in rows] == [
        ("ganbert", "ganbert", 3, 2, 100), ("baseline", "", 3, 2, 100)]
    run = tmp_path / "fraction_0.25" / "ganbert" / "seed_3"
    results = json.loads((run / "results.json").read_text())
    assert results["loss_weights"]["g_class"] == 0.0 and results["form"] == "ganbert"
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert os.path.getsize(run / "pca.png") > 0 and (tmp_path / "accuracy.png").exists()
    assert (tmp_path / "checks.png").exists() and (run.parent / "pca_seeds.png").exists()
    assert (tmp_path / "pca_ganbert.png").exists() and not (tmp_path / "pca_acgan.png").exists()
    with np.load(run / "pca.npz") as points:
        assert points["real_2d"].shape == (len(points["real_y"]), 2) and len(points["fake_y"]) == 5 * 20


def test_seed_centroids_align_principal_axes_by_sign(tmp_path):
    """A run whose PCA came out with flipped axes is flipped back before its centroids are averaged."""
    from jaxmt.gan.collapse import aligned_centroids, pca_seeds_plot

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    centres = np.array([[-2.0, 1.0], [0.0, -1.0], [2.0, 0.5]])
    paths = []
    for seed, flip in enumerate(([1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0])):
        real = (centres[y] + 0.1 * rng.normal(size=(150, 2))) * flip
        fake = (centres[y] * 0.5) * flip
        paths.append(str(tmp_path / f"seed{seed}.npz"))
        np.savez(paths[-1], real_2d=real, real_y=y, fake_2d=fake, fake_y=y, explained=np.ones(2))
    real, fake = aligned_centroids(paths, 3)
    chex.assert_shape((real, fake), (3, 3, 2))
    np.testing.assert_allclose(real.mean(0), centres, atol=0.05)
    np.testing.assert_allclose(fake, np.broadcast_to(centres * 0.5, (3, 3, 2)), atol=1e-9)
    assert os.path.getsize(pca_seeds_plot(paths, 3, str(tmp_path / "centroids.png"))) > 0


def test_class_feature_matching_compares_each_class_on_both_sides_only():
    from jaxmt.gan.losses import class_feature_matching

    real = jnp.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [9.0, 9.0]])
    real_labels, labeled = jnp.array([0, 0, 1, 2]), jnp.array([1, 1, 1, 0])  # the class-2 row is unlabeled
    fake = jnp.array([[1.0, 2.0], [6.0, 5.0], [7.0, 7.0]])
    fake_labels = jnp.array([0, 1, 2])  # class 2 has no labeled real row: left out
    # class 0: real mean (1, 0) vs (1, 2) -> mean sq 2.0; class 1: (5, 5) vs (6, 5) -> 0.5
    assert float(class_feature_matching(real, real_labels, labeled, fake, fake_labels, 3)) == pytest.approx(1.25)
    same = class_feature_matching(real[:3], real_labels[:3], labeled[:3], real[:3], real_labels[:3], 3)
    assert float(same) == 0.0


@pytest.mark.parametrize("weight_name, term_name", [("g_class_feature_matching", "class_feature_matching"),
                                                     ("g_class_embedding_matching", "class_embedding_matching")])
def test_class_matching_weights_are_generator_terms(demo_data, weight_name, term_name):
    """Per-class matching on D's features or on the embeddings: a G term, added with its weight."""
    config, data = demo_data
    _, gan, _, _, state, batch = step_inputs(config, data, ACGAN)
    real = jax.random.normal(jax.random.PRNGKey(2), (16, gan.generator.feature_dim))
    keys = jax.random.split(jax.random.PRNGKey(1), 2)

    def g_loss(weight):
        weighted = dataclasses.replace(gan, weights=gan.weights.replace(**{weight_name: weight}))
        return weighted.g_loss(state.g.params, state.d.params, real, batch, *keys)

    (base, aux), (with_term, _) = g_loss(0.0), g_loss(2.0)
    term = aux["terms"][term_name]
    assert float(term) > 0
    assert float(with_term) == pytest.approx(float(base) + 2.0 * float(term), rel=1e-5)


def test_generator_follows_d_schedule_by_default_or_keeps_a_constant_rate():
    """'same_as_d': D's warm-up + linear decay, peaking at gan.g_learning_rate (D's peak by default), with D's weight
    decay; 'constant': the peak from step 0 on, no weight decay."""
    from jaxmt.gan.build import generator_learning_rate
    from jaxmt.training.optimizer import learning_rate_schedule

    config = gan_config(NO_MODEL, **{"optim.learning_rate": 5e-5, "optim.warmup_fraction": 0.1})
    assert config.gan.g_schedule == "same_as_d" and config.gan.g_learning_rate == config.optim.learning_rate
    same, d_rate = generator_learning_rate(config, 100), learning_rate_schedule(config, 100)
    for step, rate in ((0, 0.0), (5, 2.5e-5), (10, 5e-5), (55, 2.5e-5), (100, 0.0)):
        assert float(same(step)) == pytest.approx(rate, rel=1e-6, abs=1e-12)
        assert float(d_rate(step)) == pytest.approx(rate, rel=1e-6, abs=1e-12)
    changed = lambda **fields: with_overrides(config.copy_and_resolve_references(), **fields)  # noqa: E731
    peaked = generator_learning_rate(changed(**{"gan.g_learning_rate": 1e-4}), 100)
    assert [float(peaked(s)) for s in (5, 10, 55)] == pytest.approx([5e-5, 1e-4, 5e-5])
    constant = changed(**{"gan.g_schedule": "constant", "gan.g_learning_rate": 1e-4})
    assert [float(generator_learning_rate(constant, 100)(s)) for s in (0, 10, 99)] == pytest.approx([1e-4] * 3)

    # the optimizers: step 0 moves nothing on D's schedule (warm-up starts at 0) and Adam's ~lr on a constant one;
    # on D's schedule kernels decay and biases do not
    params = {"out": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for cfg, first_update in ((config, 0.0), (constant, -1e-4)):  # Adam's first step: -rate x sign(gradient)
        tx = generator_optimizer(cfg, 100)
        updates, state = tx.update(grads, tx.init(params), params)
        assert float(updates["out"]["kernel"][0, 0]) == pytest.approx(first_update, rel=1e-3, abs=1e-12)
    tx = generator_optimizer(changed(**{"optim.weight_decay": 0.5}), 100)
    state = tx.init(params)
    for _ in range(6):  # into the warm-up, where the rate is > 0
        updates, state = tx.update(zero_grads, state, params)
    assert float(updates["out"]["kernel"][0, 0]) < 0 and float(updates["out"]["bias"][0]) == 0.0
    with pytest.raises(ConfigError, match="g_schedule"):
        check_gan_config(changed(**{"gan.g_schedule": "cosine"}))


def test_paper_form_conditions_each_fake_on_its_real_rows_label(demo_data):
    """gan.fake_labels='batch': one fake a real row, conditioned on its label, an unlabeled row's on the extra
    "no label" slot K (G's one-hot has K+1 entries); the class terms skip such fakes, and a step stays finite."""
    config, data = demo_data
    config = with_overrides(config.copy_and_resolve_references(), **{"gan.fake_labels": "batch"})
    _, gan, d_tx, g_tx, state, batch = step_inputs(config, data, GANBERT, weights={"g_class": 1.0})
    assert gan.generator.num_conditions == K + 1 and gan.generator.unlabeled_slot
    assert state.g.params["hidden"][0]["kernel"].shape[0] == gan.generator.noise_dim + K + 1
    noise, labels = gan.fake_inputs(jax.random.PRNGKey(0), batch)
    expected = np.where(batch["label_mask"] > 0, batch["labels"], K)
    np.testing.assert_array_equal(np.asarray(labels), expected)
    assert noise.shape == (16, gan.generator.noise_dim) and 0 < int((expected == K).sum()) < 16
    new, metrics = jax.jit(make_gan_step(gan, d_tx, g_tx))(state, batch, jax.random.PRNGKey(1))
    assert not bool(metrics["nonfinite"]) and np.isfinite(float(metrics["g/class"]))
    from jaxmt.gan.losses import fake_class_loss

    d = gan.discriminator
    logits = {"logits": jnp.array([[3.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 6])}
    only_first = fake_class_loss(d, logits, jnp.array([0, K]))  # the "no label" fake has no class loss
    assert float(only_first) == pytest.approx(float(fake_class_loss(d, {"logits": logits["logits"][:1]},
                                                                    jnp.array([0]))))
    with pytest.raises(ConfigError, match="fake_batch_size"):
        check_gan_config(with_overrides(config, **{"gan.fake_batch_size": 8}))


def test_paper_config_is_the_authors_form_on_the_references_schedule_and_mix():
    from configs import acgan_paper

    config = acgan_paper.get_config()
    check_gan_config(config)
    gan = config.gan
    assert (gan.form, gan.fake_labels, gan.labeled_copies, gan.g_schedule) == ("ganbert", "batch", "log2",
                                                                              "same_as_d")
    assert gan.weights.g_class is None  # resolves to 0 for the ganbert form: no class loss on fakes
    assert LossWeights.from_config(gan.weights, gan.form).g_class == 0.0
    assert (gan.g_layers, gan.d_layers, config.tasks.sst.batch_size) == (2, 3, 64)


def test_reference_mix_copies_each_labeled_row_log2_times():
    """gan.labeled_copies='log2' (the reference's apply_balance): one pool of every unlabeled row and
    int(log2(int(N / L))) copies of each labeled row, walked in seeded epochs; label masks follow membership."""
    from jaxmt.gan.semi_supervised import PooledSampler, build_sampler, log2_copies

    assert [log2_copies(n, 7544) for n in (75, 151, 377, 1509, 7544)] == [6, 5, 4, 2, 1]  # SST at 1/2/5/20/100%
    labeled = np.arange(0, 1000, 50)  # 20 of 1,000: rate 2%, 5 copies
    sampler = PooledSampler.build(1000, labeled, 16, seed=0)
    assert sampler.copies == 5 and len(sampler.pool) == 980 + 100
    assert sampler.labeled_per_batch == pytest.approx(16 * 100 / 1080)
    steps = len(sampler.pool) // 16  # 67 full batches: one epoch but the last 8 rows
    seen = np.concatenate([sampler.indices(s)[0] for s in range(steps)])
    masks = np.concatenate([sampler.indices(s)[1] for s in range(steps)])
    np.testing.assert_array_equal(masks > 0, np.isin(seen, labeled))
    counts = np.bincount(seen, minlength=1000)
    assert counts[labeled].sum() >= 100 - 8 and counts[labeled].max() == 5
    assert np.delete(counts, labeled).max() == 1
    shares = [sampler.indices(s)[1].mean() for s in range(steps)]
    assert min(shares) < max(shares)  # the labeled share varies from batch to batch, as the reference's does
    np.testing.assert_array_equal(sampler.indices(3)[0], PooledSampler.build(1000, labeled, 16, 0).indices(3)[0])
    assert PooledSampler.build(50, np.arange(50), 16, 0).indices(2)[1].all()  # all labeled: one copy, all masks 1
    config = gan_config(NO_MODEL, **{"gan.labeled_copies": "log2"})
    assert isinstance(build_sampler(config, 1000, labeled, 16), PooledSampler)
    assert build_sampler(with_overrides(config, **{"gan.labeled_copies": "none"}), 1000, labeled, 16).num_labeled == 4


def test_reference_baseline_steps_and_the_baseline_steps_flag():
    from jaxmt.gan.fractions import method_steps, reference_baseline_steps
    from jaxmt.sweep import expand_baselines

    assert reference_baseline_steps(3, 151, 64) == 7  # int(151 / 64 * 3), the reference's count at 2% SST labels
    assert reference_baseline_steps(1, 20, 64) == 1
    assert method_steps("baseline_reference", 3, 200, 7544, 151, 64) == 7
    assert method_steps("baseline", 3, 200, 7544, 151, 64) == method_steps("paper", 3, 200, 7544, 151, 64) == 354
    assert method_steps("baseline", 0, 200, 7544, 151, 64) == 200
    assert method_steps("baseline_reference", 1, 200, 7544, 151, 64, reference_epochs=3) == 7
    with pytest.raises(ConfigError, match="--epochs"):
        method_steps("baseline_reference", 0, 200, 7544, 151, 64)
    assert expand_baselines(["paper", "baseline", "ganbert"], ["reference", "equal"]) == (
        "paper", "baseline_reference", "baseline", "ganbert")
    assert expand_baselines(["baseline"], ["equal"]) == ("baseline",)
    for methods, steps, message in ((["baseline"], ["fewer"], "--baseline_steps"),
                                    (["baseline_reference"], ["equal"], "--methods")):
        with pytest.raises(ConfigError, match=message):
            expand_baselines(methods, steps)


def test_sweep_sets_each_methods_fields_and_the_reference_baselines_steps(demo_data, tmp_path, monkeypatch):
    """Stand-in trainers: the paper's form gets fake_labels='batch' and the ganbert form, GAN-BERT uniform
    labels whatever the config says, the reference baseline its own step count; the table has a Δ column for
    each baseline."""
    import jaxmt.gan.baseline
    import jaxmt.gan.build
    import jaxmt.gan.trainer
    from jaxmt.gan.fractions import reference_baseline_steps, run_sweep, steps_for_epochs

    config, data = demo_data
    config = with_overrides(config.copy_and_resolve_references(), **{"gan.fake_labels": "batch"})
    calls = []
    monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: data)
    monkeypatch.setattr(jaxmt.gan.trainer, "train_gan", recording_trainer(calls, "gan"))
    monkeypatch.setattr(jaxmt.gan.baseline, "train_baseline", recording_trainer(calls, "baseline"))
    methods = ("paper", "ganbert", "baseline", "baseline_reference")
    run_sweep(config, str(tmp_path), [0.25], methods, seeds=[0], epochs=3.0)
    by_method = {c["workdir"].split(os.sep)[-2]: c["config"] for c in calls}
    assert (by_method["paper"].gan.form, by_method["paper"].gan.fake_labels) == ("ganbert", "batch")
    assert (by_method["ganbert"].gan.form, by_method["ganbert"].gan.fake_labels) == ("ganbert", "uniform")
    assert by_method["baseline"].num_steps == by_method["paper"].num_steps == steps_for_epochs(3.0, 400, 16)
    assert by_method["baseline_reference"].num_steps == reference_baseline_steps(3.0, 100, 16) == 18
    header = open(tmp_path / "results.md").read().splitlines()[0]
    assert "Δ AC-GAN-BERT, paper's form − baseline |" in header and "Δ GAN-BERT − baseline reference" in header


def test_paper_form_trains_with_the_reference_mix_and_draws_p_real(demo_data, tmp_path, monkeypatch):
    """Two real steps of the paper's form with the reference's labeled mix through the sweep; the sweep draws
    D's p(real) on real and fake rows over training."""
    import jaxmt.gan.build
    from jaxmt.gan.fractions import p_real_curves, run_sweep

    config, data = demo_data
    monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: data)
    config = with_overrides(config.copy_and_resolve_references(), num_steps=2, log_every=1,
                            **{"gan.labeled_copies": "log2", "gan.g_layers": 2, "gan.d_layers": 3})
    rows = run_sweep(config, str(tmp_path), [0.25], ("paper",), seeds=[0])
    run = tmp_path / "fraction_0.25" / "paper" / "seed_0"
    results = json.loads((run / "results.json").read_text())
    assert rows[0]["steps"] == 2 and results["form"] == "ganbert" and results["loss_weights"]["g_class"] == 0.0
    assert results["labeled_per_batch"] == pytest.approx(16 * 200 / (200 + 300), abs=0.01)  # 25%: 2 copies
    curves = p_real_curves(rows)
    assert list(curves["real"][0]) == [1, 2] and all(0 < p < 1 for p in curves["fake"][1])
    assert os.path.getsize(tmp_path / "p_real.png") > 0


def test_sweep_archives_finished_runs_and_a_fresh_workdir_continues_from_the_archive(demo_data, tmp_path,
                                                                                      monkeypatch):
    """--archive: each finished run's records (no checkpoints) and the tables land in the archive; a later
    session with a new workdir trains only what the archive lacks."""
    import jaxmt.gan.baseline
    import jaxmt.gan.build
    import jaxmt.gan.trainer
    from jaxmt.gan.fractions import run_sweep

    config, data = demo_data
    calls = []
    monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: data)
    monkeypatch.setattr(jaxmt.gan.trainer, "train_gan", recording_trainer(calls, "gan"))
    monkeypatch.setattr(jaxmt.gan.baseline, "train_baseline", recording_trainer(calls, "baseline"))
    archive = tmp_path / "docs_runs"
    (tmp_path / "first" / "fraction_0.25" / "paper" / "seed_0" / "checkpoints").mkdir(parents=True)
    rows = run_sweep(config, str(tmp_path / "first"), [0.25], ("paper", "baseline"), seeds=[0], archive=str(archive))
    assert len(calls) == 2 and {r["workdir"] for r in rows} == {str(archive / "fraction_0.25" / m / "seed_0")
                                                                for m in ("paper", "baseline")}
    assert sorted(os.listdir(archive / "fraction_0.25" / "paper" / "seed_0")) == ["results.json"]
    assert (archive / "results.md").exists() and (tmp_path / "first" / "results.md").exists()
    calls.clear()
    rows = run_sweep(config, str(tmp_path / "second"), [0.25], ("paper", "baseline"), seeds=[0, 1],
                     archive=str(archive))
    assert sorted(c["workdir"] for c in calls) == sorted(str(tmp_path / "second" / "fraction_0.25" / m / "seed_1")
                                                         for m in ("paper", "baseline"))
    assert len(rows) == 4 and (archive / "fraction_0.25" / "baseline" / "seed_1" / "results.json").exists()
