"""model.dtype: 'auto' is float32 on CPU (so every recorded CPU figure stands) and bfloat16 on accelerators;
bfloat16 training keeps params, optimizer state, losses and metrics in float32 and tracks float32's losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict
from transformers import BertConfig

from jaxmt.config_checks import check_model_options
from jaxmt.core.state import TrainState
from jaxmt.errors import ConfigError
from jaxmt.models.options import EncoderOptions, compute_dtype

STEPS = 6
# bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4% an operation), but the losses are taken in
# float32 from float32 params: over these 6 steps the summed pre-training loss (5.09 -> 4.72) differed from
# float32's by at most 7e-5 relative (measured on the 2-core CPU host); the tolerance leaves 14x room.
RELATIVE_TOLERANCE = 1e-3


def test_auto_is_float32_on_cpu_and_bfloat16_on_accelerators(monkeypatch):
    assert jax.default_backend() == "cpu" and compute_dtype("auto") == jnp.float32
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert compute_dtype("auto") == jnp.bfloat16


@pytest.mark.parametrize("field, value, message", [
    ("dtype", "float16", "config.model.dtype = 'float16'; expected one of ('auto', 'float32', 'bfloat16')"),
    ("remat_policy", "some", "config.model.remat_policy = 'some'; expected one of"),
    ("attention_implementation", "flash", "config.model.attention_implementation = 'flash'; expected one of"),
    ("attention_implementation", "cudnn", "'cudnn' needs an NVIDIA GPU; this run's backend is 'cpu'"),
])
def test_bad_model_options_are_one_line_errors(field, value, message):
    model = ConfigDict(dict(dtype="auto", remat=False, remat_policy="full", attention_implementation="default"))
    model[field] = value
    with pytest.raises(ConfigError, match=None) as error:
        check_model_options(model)
    assert message in str(error.value) and "\n" not in str(error.value)


def train(dtype) -> tuple[list[float], TrainState, dict]:
    from test_accumulation import pretraining_batch

    from jaxmt.pretraining.model import HierarchicalBert
    from jaxmt.pretraining.step import init_params, make_train_step

    config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    model = HierarchicalBert(config, (("bigram_shift", 1), ("mlm", 2), ("nsp", 2)), "none", "cls", "sentence",
                             **EncoderOptions(dtype=dtype).kwargs())
    batch = pretraining_batch()
    tx = optax.adamw(1e-3)
    state = TrainState.create(init_params(model, jax.random.PRNGKey(0), batch), tx)
    step = jax.jit(make_train_step(model, tx, {"mlm": 1.0, "nsp": 1.0, "bigram_shift": 1.0}))
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        losses.append(float(metrics["loss/total"]))
    return losses, state, metrics


def test_bfloat16_training_on_cpu_tracks_float32_with_float32_state_and_metrics():
    reference, _, _ = train(jnp.float32)
    losses, state, metrics = train(jnp.bfloat16)
    assert np.isfinite(losses).all()
    assert losses != reference  # bfloat16 was really used
    np.testing.assert_allclose(losses, reference, rtol=RELATIVE_TOLERANCE)
    assert losses[-1] < losses[0]  # it trains
    for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state, metrics)):
        assert leaf.dtype in (jnp.float32, jnp.int32, jnp.bool_), leaf.dtype
