import numpy as np
import pytest

from jaxmt.data.demo import SPLIT_SIZES, demo_split
from jaxmt.data.sampling import TaskSampler
from jaxmt.data.schema import DEFAULT_TASKS


def test_demo_data_is_deterministic_labeled_and_marked():
    for spec in DEFAULT_TASKS.values():
        a, b = demo_split(spec, "train"), demo_split(spec, "train")
        assert a.text_a == b.text_a and a.is_demo and "demo" in a.source
        np.testing.assert_array_equal(a.labels, b.labels)
        assert len(a) == SPLIT_SIZES["train"]
        assert all(spec.check_label(float(v)) is None for v in a.labels)
        assert (a.text_b is not None) == spec.is_pair
        assert demo_split(spec, "test").labels is None
        assert demo_split(spec, "dev").text_a != a.text_a[: SPLIT_SIZES["dev"]]
    # classes are balanced enough to make "clearly above chance" meaningful
    counts = np.bincount(demo_split(DEFAULT_TASKS["sst"], "dev").labels, minlength=5)
    assert counts.min() > 50


def sampler(mode, steps=40):
    return TaskSampler({"a": 10, "b": 25, "c": 7}, {"a": 4, "b": 5, "c": 7}, mode, seed=3, num_steps=steps)


def test_each_epoch_covers_every_example_once():
    s = sampler("all")
    drawn = np.concatenate([s.indices("b", step) for step in range(10)])  # 50 = two epochs of 25
    assert sorted(drawn[:25]) == list(range(25)) and sorted(drawn[25:]) == list(range(25))
    assert not np.array_equal(drawn[:25], drawn[25:])  # reshuffled each epoch
    # a batch straddling an epoch boundary: a has 10 examples, batch 4
    drawn = np.concatenate([s.indices("a", step) for step in range(5)])
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:20]) == list(range(10))


def test_schedules():
    assert sampler("all").tasks_at(7) == ("a", "b", "c")
    rr = sampler("round_robin")
    assert [rr.tasks_at(s)[0] for s in range(6)] == ["a", "b", "c", "a", "b", "c"]
    prop = sampler("proportional", steps=4000)
    counts = {t: sum(prop.tasks_at(s) == (t,) for s in range(4000)) for t in "abc"}
    assert counts["b"] / 4000 == pytest.approx(25 / 42, abs=0.03)
    # the k-th draw of a task walks its epochs in order, whatever steps it lands on
    steps_b = [s for s in range(4000) if prop.tasks_at(s) == ("b",)]
    drawn = np.concatenate([prop.indices("b", s) for s in steps_b[:5]])
    assert sorted(drawn) == list(range(25))


def test_batches_depend_only_on_seed_and_step():
    first = [sampler("proportional").indices(t, 17) for t in "abc"]
    again = sampler("proportional")
    assert all(np.array_equal(x, again.indices(t, 17)) for x, t in zip(first, "abc"))
    other = TaskSampler({"a": 10, "b": 25, "c": 7}, {"a": 4, "b": 5, "c": 7}, "all", seed=4, num_steps=40)
    assert not np.array_equal(other.indices("b", 0), sampler("all").indices("b", 0))


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="sampling mode"):
        sampler("random")
    with pytest.raises(ValueError, match="fewer than its batch size"):
        TaskSampler({"a": 3}, {"a": 4}, "all", 0, 10)
