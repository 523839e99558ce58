"""jaxmt's own BERT (jaxmt.models.bert) and its Hugging Face checkpoint I/O (jaxmt.models.hf_checkpoint).

The reference is transformers' FlaxBertModel; this file is the only test that needs it for the encoder,
so it goes when transformers drops Flax.
"""

from __future__ import annotations

import json

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import requires_minilm

from jaxmt.models.bert import BertModel, init_bert_params
from jaxmt.models.encoder import BertEncoder
from jaxmt.models.hf_checkpoint import load_hf_params, save_hf_model, torch_layout_from_params
from jaxmt.models.pretrained import ModelError, load_pretrained, write_random_bert

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def tiny_config(**overrides):
    from transformers import BertConfig

    settings = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64)
    settings.update(overrides)
    return BertConfig(**settings)


def flax_bert(config, params):
    """transformers' FlaxBertModel holding `params` (the reference implementation)."""
    from transformers import FlaxBertModel

    return FlaxBertModel(config, _do_init=False), params


def padded_batch(vocab_size: int, lengths: tuple[int, ...], width: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    return {"input_ids": rng.integers(5, vocab_size, size=(len(lengths), width)).astype(np.int32) * mask,
            "attention_mask": mask,
            "token_type_ids": (np.arange(width)[None, :] >= 3).astype(np.int32).repeat(len(lengths), 0) * mask}


def assert_gradients_match(got: dict, want: dict, rtol: float = 1e-4) -> None:
    """Each leaf within `rtol` of its own largest |want|.

    The attention key biases are the exception: their gradient is analytically zero (softmax ignores a
    shift shared by all keys), so both sides hold rounding noise, checked to be negligible instead.
    """
    chex.assert_trees_all_equal_shapes(got, want)
    largest = max(float(jnp.abs(w).max()) for w in jax.tree_util.tree_leaves(want))
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree_util.tree_leaves(want)):
        name = jax.tree_util.keystr(path)
        if "['key']['bias']" in name:
            assert max(float(jnp.abs(g).max()), float(jnp.abs(w).max())) <= 1e-7 * largest, name
        else:
            assert float(jnp.abs(g - w).max()) <= rtol * float(jnp.abs(w).max()), name


def assert_matches_flax_bert(config, params, batch) -> None:
    """Every hidden state within 1e-5 of FlaxBertModel's, and parameter gradients within 1e-4 (relative)."""
    reference, params = flax_bert(config, params)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    want = reference.module.apply({"params": params}, *args, output_hidden_states=True)
    got = BertModel(config).apply({"params": params}, *args, output_hidden_states=True)
    assert len(got.hidden_states) == config.num_hidden_layers + 1
    for got_state, want_state in zip(got.hidden_states, want.hidden_states):
        chex.assert_type(got_state, jnp.float32)
        chex.assert_shape(got_state, batch["input_ids"].shape + (config.hidden_size,))
        np.testing.assert_allclose(got_state, want_state, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.pooler_output, want.pooler_output, atol=1e-5, rtol=0)

    weights = jax.random.normal(jax.random.PRNGKey(0), want.last_hidden_state.shape)
    mask = jnp.asarray(batch["attention_mask"])[..., None]

    def loss(p, apply):  # reads every layer and the pooler, real tokens only
        out = apply({"params": p}, *args, output_hidden_states=True)
        states = sum(jnp.sum(h * weights * mask) for h in out.hidden_states)
        return states + jnp.sum(out.pooler_output)

    got_grads = jax.jit(jax.grad(loss), static_argnums=1)(params, BertModel(config).apply)
    want_grads = jax.jit(jax.grad(loss), static_argnums=1)(params, reference.module.apply)
    assert_gradients_match(got_grads, want_grads)


def test_random_init_is_flax_berts_tree_and_values():
    from transformers import FlaxBertModel

    config = tiny_config()
    chex.assert_trees_all_equal(init_bert_params(config, seed=3), FlaxBertModel(config, seed=3).params)


def test_tiny_bert_matches_flax_bert_with_padding():
    config = tiny_config()
    batch = padded_batch(config.vocab_size, (9, 6, 2), width=9)
    assert_matches_flax_bert(config, init_bert_params(config, seed=1), batch)


@pytest.mark.slow
@requires_minilm
def test_minilm_loads_flax_berts_params_and_matches_its_outputs():
    from transformers import FlaxBertModel

    pretrained = load_pretrained("minilm")
    reference = FlaxBertModel.from_pretrained(pretrained.path, local_files_only=True)
    chex.assert_trees_all_equal(pretrained.params, reference.params)
    enc = pretrained.tokenizer(["A man is playing a guitar.", "Hi."], padding=True, return_tensors="np")
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert_matches_flax_bert(pretrained.config, pretrained.params, batch)


def test_packed_examples_match_each_example_alone_and_ignore_their_row_mates():
    config = tiny_config()
    encoder = BertEncoder(config)
    params = {"bert": {k: v for k, v in init_bert_params(config, seed=2).items() if k != "pooler"}}
    first = padded_batch(config.vocab_size, (5,), width=5, seed=1)
    second = padded_batch(config.vocab_size, (7,), width=7, seed=2)

    def alone(example):
        return encoder.apply({"params": params}, example["input_ids"], example["attention_mask"],
                             example["token_type_ids"])[0]

    def packed(first_ids, second_ids):
        pad = np.zeros((1, 2), np.int32)
        row = lambda a, b: np.concatenate([a, b, pad], axis=1)  # noqa: E731  [1, 14]
        segment_ids = row(np.full((1, 5), 1, np.int32), np.full((1, 7), 2, np.int32))
        position_ids = row(np.arange(5)[None], np.arange(7)[None])
        return encoder.apply({"params": params}, row(first_ids, second_ids), None,
                             row(first["token_type_ids"], second["token_type_ids"]),
                             position_ids=position_ids, segment_ids=segment_ids)[0]

    out = packed(first["input_ids"], second["input_ids"])
    chex.assert_shape(out, (14, config.hidden_size))
    np.testing.assert_allclose(out[:5], alone(first), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[5:12], alone(second), atol=1e-5, rtol=0)
    changed = packed(first["input_ids"], (second["input_ids"] + 1) % config.vocab_size)
    np.testing.assert_array_equal(changed[:5], out[:5])
    assert float(jnp.abs(changed[5:12] - out[5:12]).max()) > 1e-3


def test_attention_dropout_path_equals_the_fused_one_at_negligible_rate():
    """Training with attention dropout writes the softmax out; at rate ~0 it must equal the fused call."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=1e-9)
    params = init_bert_params(config, seed=4)
    batch = padded_batch(config.vocab_size, (8, 4), width=8)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    fused = BertModel(config).apply({"params": params}, *args).last_hidden_state
    written_out = BertModel(config).apply({"params": params}, *args, deterministic=False,
                                          rngs={"dropout": jax.random.PRNGKey(0)}).last_hidden_state
    np.testing.assert_allclose(written_out, fused, atol=1e-5, rtol=0)
    dropped = BertModel(tiny_config()).apply({"params": params}, *args, deterministic=False,
                                             rngs={"dropout": jax.random.PRNGKey(0)}).last_hidden_state
    assert float(jnp.abs(dropped - fused).max()) > 1e-2


def test_remat_keeps_values_and_bf16_computes_in_bf16_on_float32_params():
    config = tiny_config()
    params = {"bert": init_bert_params(config, seed=5)}
    batch = padded_batch(config.vocab_size, (6, 3), width=6)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    weights = jax.random.normal(jax.random.PRNGKey(0), batch["input_ids"].shape + (config.hidden_size,))

    def loss(p, encoder):  # linear in the output: a LayerNorm'd output's sum of squares would be constant
        return jnp.sum(encoder.apply({"params": p}, *args) * weights)

    grad = lambda encoder: jax.jit(jax.grad(lambda p: loss(p, encoder)))(params)  # noqa: E731
    assert_gradients_match(grad(BertEncoder(config, remat=True)), grad(BertEncoder(config)))
    half = BertEncoder(config, dtype=jnp.bfloat16)
    chex.assert_type(half.apply({"params": params}, *args), jnp.bfloat16)
    init = half.init(jax.random.PRNGKey(0), *args)["params"]
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(init)} == {jnp.dtype(jnp.float32)}


def test_safetensors_and_msgpack_load_to_flax_berts_params(tmp_path):
    from transformers import FlaxBertModel

    config = tiny_config()
    params = init_bert_params(config, seed=6)
    FlaxBertModel(config, _do_init=False).save_pretrained(tmp_path / "msgpack", params=params)
    chex.assert_trees_all_equal(load_hf_params(tmp_path / "msgpack", config), params)

    # A PyTorch BertForPreTraining-style file: `bert.` prefix, old gamma/beta names, heads and buffers.
    from safetensors.numpy import save_file

    old_names = lambda name: name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(  # noqa: E731
        "LayerNorm.bias", "LayerNorm.beta")
    tensors = {"bert." + old_names(name): value for name, value in torch_layout_from_params(params).items()}
    tensors["bert.embeddings.position_ids"] = np.arange(config.max_position_embeddings)[None]
    tensors["cls.predictions.bias"] = np.zeros(config.vocab_size, np.float32)
    (tmp_path / "torch").mkdir()
    save_file(tensors, str(tmp_path / "torch" / "model.safetensors"), metadata={"format": "pt"})
    chex.assert_trees_all_equal(load_hf_params(tmp_path / "torch", config), params)


def test_saved_directory_loads_in_flax_bert_and_back(tmp_path):
    from transformers import FlaxBertModel

    path = write_random_bert(tmp_path / "bert", WORDS, seed=7, hidden_size=16, num_attention_heads=2)
    pretrained = load_pretrained(str(path))
    assert not (path / "flax_model.msgpack").exists()
    chex.assert_trees_all_equal(pretrained.params, init_bert_params(pretrained.config, seed=7))
    chex.assert_trees_all_equal(FlaxBertModel.from_pretrained(path, local_files_only=True).params, pretrained.params)
    # Without a pooler (no NSP head trained one) the export has none, and says so: never random weights.
    encoder = {k: v for k, v in pretrained.params.items() if k != "pooler"}
    again = load_pretrained(str(save_hf_model(tmp_path / "again", encoder, pretrained.config, pretrained.tokenizer)))
    chex.assert_trees_all_equal(again.params, encoder)
    assert json.loads((tmp_path / "again" / "config.json").read_text())["jaxmt_export"]["add_pooling_layer"] is False
    assert again.tokenizer.get_vocab() == pretrained.tokenizer.get_vocab()


@pytest.mark.parametrize("break_it, message", [
    (lambda params, config: config.update({"hidden_size": 24, "num_attention_heads": 2}),
     r"model.safetensors: parameter embeddings/LayerNorm/bias has shape \(32,\), but config.json implies \(24,\)"),
    (lambda params, config: params["encoder"]["layer"].pop("1"),
     r"model.safetensors: parameter encoder/layer/1/attention/output/LayerNorm/bias is missing"),
    (lambda params, config: config.update({"position_embedding_type": "relative_key"}),
     r"config.json: position_embedding_type is 'relative_key'"),
])
def test_checkpoints_that_do_not_fit_raise_model_errors_naming_the_file(tmp_path, break_it, message):
    from transformers import BertTokenizerFast

    config = tiny_config()
    params = init_bert_params(config)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    params = jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(params))
    break_it(params, config)
    save_hf_model(tmp_path / "model", params, tiny_config(), tokenizer)
    with pytest.raises(ModelError, match=message):
        load_hf_params(tmp_path / "model", config)
