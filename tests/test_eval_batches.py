"""Evaluation packed into rows sized to the examples (jaxmt.data.eval_batches): every example once, each in the
row length its size fills best, a few shapes, and the Predictor's packed predictions equal to its padded ones
for cross, siamese and triplet pairs."""

import jax
import numpy as np
import pytest
from conftest import tiny_config

from jaxmt.data.eval_batches import EvalPacking, eval_packing, example_sizes, fit_choice, row_choice, sized_eval_batches
from jaxmt.data.sources import load_splits, task_specs
from jaxmt.parallel.mesh import make_mesh
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor


@pytest.fixture(scope="module", params=["cross", "siamese", "triplet"])
def eval_setup(request, tiny_bert, tiny_bert_dir):
    config = tiny_config(tiny_bert_dir, **{"model.pair_mode": request.param, "model.dropout": 0.0,
                                         "data.max_eval_examples": 40})
    specs = task_specs(config)
    splits = setup.encode_splits(config, load_splits(config, specs, "dev"), tiny_bert.tokenizer)
    model = setup.build_model(config, tiny_bert.config, specs)
    params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
    return config, splits, model, params, tiny_bert.tokenizer.pad_token_id


def test_every_example_once_in_the_rows_its_size_fills_best(eval_setup):
    _, splits, _, _, pad_id = eval_setup
    packing = EvalPacking(row_lengths=(16, 32, 64), tokens=256, max_examples=24, groups=2)
    for task, split in splits.items():
        sizes, seen, shapes = example_sizes(split), [], set()
        for idx, batch in sized_eval_batches(split, packing, pad_id):
            rows, length = batch["input_ids"].shape
            shapes.add((rows, length))
            full = 2 * max(256 // (2 * length), split.num_sequences)  # two groups of rows
            assert rows in (full, full // 2, full // 4)  # a length's last batch may take a half or a quarter
            # each group's rows fill from the first; half as many rows would not have held these examples
            used = np.flatnonzero(batch["segment_ids"].reshape(2, rows // 2, length).max(axis=(0, 2)) > 0)
            np.testing.assert_array_equal(used, np.arange(len(used)))
            assert rows == full // 4 or len(used) > rows // 4 or rows // 4 < split.num_sequences
            assert batch["example_mask"].sum() == len(idx) <= 24 and len(batch["example_mask"]) == 24
            np.testing.assert_array_equal(batch["labels"][batch["example_mask"] > 0], split.data.labels[idx])
            assert (np.asarray([16, 32, 64])[row_choice(sizes[idx], (16, 32, 64))] == length).all(), task
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(len(split.data))) and len(shapes) <= 9


def test_sized_rows_come_from_the_pack_length_and_an_overlong_sequence_is_an_error(eval_setup):
    _, splits, _, _, pad_id = eval_setup
    # A 20-token example fills 64-token rows best (3 a row), 28 tokens 32-token rows (the shortest of equals),
    # 17 tokens 128-token rows (7 a row), and what no row holds goes to the longest.
    np.testing.assert_array_equal(row_choice(np.array([20, 28, 17, 200]), (32, 64, 128)), [1, 0, 2, 2])
    packing = eval_packing(64, groups=4)
    assert packing.row_lengths == (16, 32, 64) and packing.groups == 4 and packing.layout(16).groups == 4
    with pytest.raises(ValueError, match=r"does not fit the longest evaluation row \(8 tokens\)"):
        next(sized_eval_batches(splits["sst"], EvalPacking(row_lengths=(4, 8)), pad_id))


def test_a_given_row_choice_overrides_the_size_fill(eval_setup):
    # benchmarks/eval_layout_cost.py compares layouts by handing each example's row length in
    _, splits, _, _, pad_id = eval_setup
    split = splits["para"]
    which = np.arange(len(split.data)) % 2  # alternately the 32- and the 64-token rows, whatever their size
    packing = EvalPacking(row_lengths=(32, 64), tokens=256, max_examples=24)
    seen = []
    for idx, batch in sized_eval_batches(split, packing, pad_id, which):
        assert (np.asarray([32, 64])[which[idx]] == batch["input_ids"].shape[1]).all()
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(split.data)))
    # fit_choice: the shortest row that holds an example's longest sequence, the longest row past it
    lengths = (8, 16, 24, 32)
    chosen = np.asarray(lengths)[fit_choice(split, lengths)]
    longest = np.asarray([max(len(q) for q in seqs) for seqs in split.input_ids])
    assert ((chosen >= longest) | (chosen == 32)).all() and ((chosen - 8 < longest) | (chosen == 8)).all()


def test_packed_predictions_equal_the_padded_ones(eval_setup):
    config, splits, model, params, pad_id = eval_setup
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    padded = Predictor(model, mesh, 16, (16, 32, 64), pad_id)
    sized = EvalPacking(row_lengths=(16, 32, 64), tokens=256, max_examples=24, groups=2)
    packed = Predictor(model, mesh, 16, (16, 32, 64), pad_id, {t: sized for t in splits})
    metrics_padded, by_padded = padded.evaluate(params, splits)
    metrics_packed, by_packed = packed.evaluate(params, splits)
    for task in splits:
        np.testing.assert_allclose(by_packed[task], by_padded[task], atol=1e-5)
    assert metrics_packed == pytest.approx(metrics_padded, abs=1e-6)
