"""model.remat and model.remat_policy reach pre-training and QA (fine-tuning's are tested in test_models): the
rematerialised layers give the same loss and gradients as stored activations, dropout included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import BertConfig

from jaxmt.models.options import EncoderOptions

TOLERANCE = dict(rtol=1e-5, atol=1e-7)  # recomputation may fuse differently: float32 rounding only


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)  # BERT's dropout 0.1, on in training


def assert_same_loss_and_grads(loss_fn, params, variants):
    """`loss_fn(variant, params)` for each variant gives the first variant's loss and gradients."""
    results = [jax.jit(jax.value_and_grad(lambda p, v=v: loss_fn(v, p)))(params) for v in variants]
    for variant, (loss, grads) in zip(variants[1:], results[1:]):
        np.testing.assert_allclose(loss, results[0][0], **TOLERANCE, err_msg=str(variant))
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE), grads, results[0][1])


def test_pretraining_remat_gives_the_same_loss_and_grads():
    from test_accumulation import pretraining_batch

    from jaxmt.pretraining.model import HierarchicalBert
    from jaxmt.pretraining.step import init_params, task_losses

    layers = (("bigram_shift", 1), ("mlm", 2), ("nsp", 2))
    batch = pretraining_batch()
    variants = [EncoderOptions(), EncoderOptions(remat=True)]
    models = {v: HierarchicalBert(tiny_config(), layers, **v.kwargs()) for v in variants}
    params = init_params(models[variants[0]], jax.random.PRNGKey(0), batch)
    assert jax.tree_util.tree_structure(init_params(models[variants[1]], jax.random.PRNGKey(0), batch)) == \
        jax.tree_util.tree_structure(params)  # same parameter tree: checkpoints load either way

    def loss(variant, p):
        outputs = models[variant].apply({"params": p}, batch, deterministic=False,
                                        rngs={"dropout": jax.random.PRNGKey(5)})
        return sum(task_losses(outputs, batch).values())

    assert_same_loss_and_grads(loss, params, variants)


def test_qa_remat_gives_the_same_loss_and_grads():
    from test_accumulation import qa_batch

    from jaxmt.downstream.qa_model import SpanModel

    batch = jax.tree_util.tree_map(jnp.asarray, qa_batch(n=4))
    variants = [EncoderOptions(), EncoderOptions(remat=True), EncoderOptions(remat=True, remat_policy="dots_saveable")]
    models = {v: SpanModel.build(tiny_config(), v) for v in variants}
    params = models[variants[0]].init(jax.random.PRNGKey(0))
    assert_same_loss_and_grads(lambda v, p: models[v].loss(p, batch, jax.random.PRNGKey(5)), params, variants)


@pytest.mark.parametrize("config_name", ["default", "pretrain_bert", "squad", "acgan"])
def test_every_base_config_reaches_the_remat_fields(config_name):
    import importlib

    config = importlib.import_module(f"configs.{config_name}").get_config()
    options = EncoderOptions.from_config(config.model)
    assert options.remat is False and options.remat_policy == "full"
