import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmt.data.schema import DEFAULT_TASKS
from jaxmt.training.losses import predict, task_loss
from jaxmt.training.metrics import accuracy, pearson, task_metric


def test_cross_entropy_by_hand_with_masked_row():
    logits = jnp.asarray([[0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0, 9.0]])
    labels = jnp.asarray([1, 0, 3])
    loss = task_loss(DEFAULT_TASKS["sst"], logits, labels, jnp.asarray([1.0, 1.0, 0.0]))
    expected = (math.log(5) + (math.log(math.exp(2) + 4) - 2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_binary_cross_entropy_on_one_logit_by_hand():
    logits, labels = jnp.asarray([0.0, 2.0]), jnp.asarray([1, 0])
    loss = task_loss(DEFAULT_TASKS["para"], logits, labels, jnp.ones(2))
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(predict(DEFAULT_TASKS["para"], jnp.asarray([-0.1, 0.1])), [0, 1])


def test_regression_loss_is_mse_of_scores():
    loss = task_loss(DEFAULT_TASKS["sts"], jnp.asarray([1.0, 4.0, 0.0]), jnp.asarray([2.0, 2.0, 5.0]),
                     jnp.asarray([1.0, 1.0, 0.0]))
    assert float(loss) == pytest.approx((1.0 + 4.0) / 2)


def test_fully_masked_batch_gives_zero_not_nan():
    loss = task_loss(DEFAULT_TASKS["sts"], jnp.ones(2), jnp.zeros(2), jnp.zeros(2))
    assert float(loss) == 0.0


def test_metrics_by_hand():
    assert accuracy(np.asarray([1, 2, 3, 4]), np.asarray([1, 2, 0, 0])) == 0.5
    x, y = np.asarray([1.0, 2.0, 3.0, 4.0]), np.asarray([2.0, 4.0, 5.0, 9.0])
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert pearson(np.ones(4), y) == 0.0
    assert task_metric(DEFAULT_TASKS["sts"], x, 2 * x + 1) == pytest.approx(1.0)
    assert task_metric(DEFAULT_TASKS["sst"], np.asarray([0, 1]), np.asarray([0, 0])) == 0.5
