"""Packed batches (jaxmt.data.packing): the layout, token-budget draws that are a pure function of the step,
and packed outputs, losses and gradients equal to the padded ones for the same examples."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxmt.data.eval_batches import eval_packing, sized_eval_batches
from jaxmt.data.packing import (
    MAX_DROPPED_SHARE,
    PackedTaskSampler,
    PackLayout,
    layout_for,
    pack_batch,
    place,
    simulated_drops,
    sizing_draws,
)
from jaxmt.data.sampling import TaskSampler, eval_batches
from jaxmt.data.sources import load_splits, task_specs
from jaxmt.data.tokenization import make_batch
from jaxmt.training import setup
from jaxmt.training.losses import task_loss

# per_task: Quora pairs jointly (1 sequence) beside STS triplets (3) in the same step.
PAIR_SETUPS = {"cross": {"model.pair_mode": "cross"}, "siamese": {"model.pair_mode": "siamese"},
               "triplet": {"model.pair_mode": "triplet"}, "per_task": {"tasks.sts.pair_mode": "triplet"}}


@pytest.fixture(scope="module", params=list(PAIR_SETUPS))
def packed_setup(request, tiny_bert, tiny_bert_dir):
    config = tiny_config(tiny_bert_dir, **{**PAIR_SETUPS[request.param], "model.dropout": 0.0})
    specs = task_specs(config)
    splits = setup.encode_splits(config, load_splits(config, specs, "train"), tiny_bert.tokenizer)
    model = setup.build_model(config, tiny_bert.config, specs)
    params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
    return config, splits, model, params, tiny_bert.tokenizer.pad_token_id


def test_pack_batch_segments_positions_and_token_types():
    from types import SimpleNamespace

    from jaxmt.data.schema import DEFAULT_TASKS

    seqs = [np.array([101, 5, 6, 102]), np.array([101, 7, 102]), np.array([101, 8, 9, 10, 11, 102])]
    types = [np.array([0, 0, 1, 1]), np.zeros(3, np.int64), np.zeros(6, np.int64)]
    split = SimpleNamespace(input_ids=[(s,) for s in seqs], token_type_ids=[(t,) for t in types], num_sequences=1,
                            data=SimpleNamespace(spec=DEFAULT_TASKS["sst"], labels=np.array([1, 2, 3])))
    layout = PackLayout(rows=2, length=8, max_examples=4)
    placed, count = place(split, np.arange(3), layout)
    assert count == 3 and placed == [(0, 0), (0, 4), (1, 0)]  # first fit, in order
    batch = pack_batch(split, np.arange(3), layout, pad_id=0)
    np.testing.assert_array_equal(batch["input_ids"][0], [101, 5, 6, 102, 101, 7, 102, 0])
    np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(batch["position_ids"][0], [0, 1, 2, 3, 0, 1, 2, 0])
    np.testing.assert_array_equal(batch["token_type_ids"][0], [0, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["segment_ids"][1], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch["example_segments"][0, :, 0], [1, 2, 9, 0])  # row * 8 + segment
    np.testing.assert_array_equal(batch["labels"], [1, 2, 3, 0])
    np.testing.assert_array_equal(batch["example_mask"], [1, 1, 1, 0])
    # A fourth example of 6 tokens fits no row: a draw stops before it.
    split.input_ids.append((np.arange(6),))
    assert place(split, np.arange(4), layout)[1] == 3


def test_packed_draws_are_a_pure_function_of_the_step_and_cover_the_stream(packed_setup):
    config, splits, *_ = packed_setup
    batch_sizes = {t: 8 for t in splits}
    for groups in (1, 2):
        layouts = {t: layout_for(s, 8, 128, groups) for t, s in splits.items()}
        one = PackedTaskSampler(splits, layouts, batch_sizes, "all", 0, 20)
        two = PackedTaskSampler(splits, layouts, batch_sizes, "all", 0, 20)
        padded = TaskSampler({t: len(s.data) for t, s in splits.items()}, batch_sizes, "all", 0, 20)
        for task, split in splits.items():
            for step in (0, 7, 19):
                np.testing.assert_array_equal(one.indices(task, step), two.indices(task, step))
            drawn = np.concatenate([one.indices(task, s) for s in range(20)])
            dropped = sum(one.dropped(task, s) for s in range(20))
            stream = np.concatenate([padded.indices(task, s) for s in range(20)])
            # The padded sampler's examples, each in its own draw or (carried) the next unless dropped.
            assert len(set(stream[:19 * 8].tolist()) - set(drawn.tolist())) <= dropped
            assert len(drawn) >= 19 * 8 - dropped and set(drawn.tolist()) <= set(stream.tolist())
            for step in range(20):  # every draw fits its layout; a group's examples lie in its rows
                batch = one.batch(task, step, 0)
                layout = layouts[task]
                assert batch["input_ids"].shape == (layout.array_rows, 128)
                assert batch["example_segments"].shape == (groups, layout.max_examples, split.num_sequences)
                assert batch["example_mask"].sum() == len(one.indices(task, step))
                assert batch["example_segments"].max() < layout.rows * 128
        assert one.examples_per_step() == {t: 8.0 for t in splits}


def test_dropped_share_counts_the_carried_examples_without_room(packed_setup):
    config, splits, *_ = packed_setup
    # Rows one example's worth: most of a group's share is carried, and most of the carry dropped.
    layouts = {t: dataclasses.replace(layout_for(s, 8, int(s.lengths.max()), 2), rows=s.num_sequences)
               for t, s in splits.items()}
    sampler = PackedTaskSampler(splits, layouts, {t: 8 for t in splits}, "round_robin", 0, 12)
    shares = sampler.dropped_share(12)
    assert sorted(shares) == sorted(splits)
    for task in splits:  # round robin: a task trains every len(tasks)-th step, 8 examples a draw
        steps = [s for s in range(12) if sampler.tasks_at(s) == (task,)]
        assert shares[task] == sum(sampler.dropped(task, s) for s in steps) / (8 * len(steps)) > 0


def test_rows_are_the_fewest_whose_simulated_draws_drop_at_most_the_bound(packed_setup):
    config, splits, *_ = packed_setup
    for groups in (1, 2):
        for task, split in splits.items():
            layout = layout_for(split, 8, 64, groups)
            draws = sizing_draws(split, 8 // groups)
            budget = MAX_DROPPED_SHARE * (8 // groups) * (len(draws) - 1)
            assert layout.rows >= split.num_sequences and layout.max_examples == 2 * (8 // groups)
            assert simulated_drops(split, draws, layout) <= budget, (task, layout)
            if layout.rows > split.num_sequences:  # one row fewer drops more than the bound
                assert simulated_drops(split, draws, dataclasses.replace(layout, rows=layout.rows - 1)) > budget
            # the sampler's own stream drops about as often (its draws are a shuffled epoch, not these)
            sampler = PackedTaskSampler({task: split}, {task: layout}, {task: 8}, "all", 0, 40)
            assert sampler.dropped_share(40)[task] <= 2 * MAX_DROPPED_SHARE, (task, layout)
            # data.pack_max_dropped = 0: rows for every simulated draw, at least as many, none of them dropping
            exact = layout_for(split, 8, 64, groups, max_dropped_share=0.0)
            assert exact.rows >= layout.rows and simulated_drops(split, draws, exact) == 0, (task, exact)


def padded_and_packed(splits, task, idx, pad_id, length=128):
    split = splits[task]
    padded = make_batch(split, idx, 64, pad_id)
    tokens = sum(len(q) for i in idx for q in split.input_ids[i])
    layout = PackLayout(rows=-(-tokens // length) + 1, length=length, max_examples=len(idx) + 2)
    return padded, pack_batch(split, idx, layout, pad_id)


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_packed_outputs_losses_and_gradients_equal_the_padded_ones(packed_setup, task):
    config, splits, model, params, pad_id = packed_setup
    idx = np.arange(6)
    padded, packed = padded_and_packed(splits, task, idx, pad_id)
    out_padded = model.outputs(params, task, padded)
    out_packed = model.outputs(params, task, packed)
    chex.assert_shape(out_packed, (8,) + out_padded.shape[1:])
    np.testing.assert_allclose(out_packed[:6], out_padded, atol=1e-5, rtol=1e-5)

    def loss(p, batch):
        return task_loss(model.specs[task], model.outputs(p, task, batch), batch["labels"], batch["example_mask"])

    (l_pad, g_pad), (l_pack, g_pack) = (jax.value_and_grad(loss)(params, b) for b in (padded, packed))
    np.testing.assert_allclose(l_pack, l_pad, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_pad), jax.tree_util.tree_leaves(g_pack)):
        scale = float(jnp.max(jnp.abs(a))) + 1e-12
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * scale + 1e-7, jax.tree_util.keystr(path)


def test_no_attention_crosses_a_segment_boundary(packed_setup):
    config, splits, model, params, pad_id = packed_setup
    split = splits["sts"]
    idx = np.arange(5)
    layout = PackLayout(rows=2 * split.num_sequences, length=128, max_examples=6)
    batch = pack_batch(split, idx, layout, pad_id)
    changed = dict(batch)
    ids = batch["input_ids"].copy()
    target = batch["segment_ids"] == 1  # the first sequence packed in each row
    target[:, 0] = False  # keep its [CLS]
    ids[target] = 7
    changed["input_ids"] = ids
    before, after = model.outputs(params, "sts", batch), model.outputs(params, "sts", changed)
    row_mates = [e for e in range(5) if all(s % 128 != 1 for s in batch["example_segments"][0, e])]
    assert row_mates and len(row_mates) < 5
    np.testing.assert_allclose(after[np.asarray(row_mates)], before[np.asarray(row_mates)], atol=1e-6)
    assert not np.allclose(after, before)


def test_packed_evaluation_predicts_every_example_as_the_padded_pass(packed_setup):
    config, splits, model, params, pad_id = packed_setup
    split = splits["para"]
    predict = jax.jit(lambda p, b: model.outputs(p, "para", b))
    out = {}
    for name, batches in (("padded", eval_batches(split, 16, (16, 32, 64), pad_id)),
                          ("packed", sized_eval_batches(split, eval_packing(128), pad_id))):
        out[name] = np.zeros(len(split.data), np.float32)
        seen = []
        for idx, batch in batches:
            out[name][idx] = np.asarray(predict(params, batch))[: len(idx)]
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(len(split.data)))
    np.testing.assert_allclose(out["packed"], out["padded"], atol=1e-5)


def test_packed_training_compiles_the_step_once(tiny_bert_dir, tmp_path):
    from jaxmt.training.trainer import train_and_evaluate

    config = tiny_config(tiny_bert_dir, **{"optim.gradient_surgery": "pcgrad", "eval_every": 0})
    results = train_and_evaluate(config, str(tmp_path))
    assert results["train_step_compiles"] == 1 and set(results["dev"]) == {"sst", "para", "sts", "mean"}
    drops = results["data"]["packing_dropped_share"]  # measured at start over the first steps, recorded
    assert sorted(drops) == ["para", "sst", "sts"] and all(0 <= d < 0.5 for d in drops.values())
    assert results["data"]["packing_dropped_steps"] == config.num_steps


def test_pack_groups_fix_the_row_groups_and_must_split_the_batches(tiny_bert_dir):
    from jaxmt.errors import ConfigError
    from jaxmt.parallel.mesh import make_mesh

    config = tiny_config(tiny_bert_dir, **{"data.pack_groups": 8, "optim.accumulation_steps": 2})
    assert setup.pack_groups(config, 1) == setup.pack_groups(config, 4) == 8  # the config's, not the devices'
    assert setup.pack_groups(tiny_config(tiny_bert_dir), 2) == 2  # 0: one a data-parallel device
    mesh = make_mesh(config.mesh.axes, config.mesh.shape, jax.devices()[:1])
    with pytest.raises(ConfigError, match=r"tasks.sst.batch_size = 8 does not split into 8 packed row groups x 2 "):
        setup.check_batches_fit(config, mesh)
