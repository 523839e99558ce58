"""Exported encoders load right everywhere: the pretrained model's own pooler (or none, said in config.json),
transformers' PyTorch BertModel reproducing jaxmt's hidden states and pooled output, and sentence-transformers
reproducing a run's sentence embeddings."""

from __future__ import annotations

import importlib.util
import json

import chex
import jax
import numpy as np
import pytest
from conftest import tiny_config

from jaxmt.models.bert import BertModel
from jaxmt.models.encoder import pool
from jaxmt.models.hf_checkpoint import save_hf_model
from jaxmt.models.pretrained import load_pretrained

SENTENCES = ["a gripping film", "the plot drags on and on", "fine"]
requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                    reason="torch not installed (the bench extra: pip install -e '.[bench]')")


def sentence_transformer(path):
    """sentence-transformers' model of an exported folder; a skip with the reason where it cannot be imported."""
    try:
        from sentence_transformers import SentenceTransformer
    except Exception as err:  # not installed, or broken by its own dependencies
        pytest.skip(f"sentence-transformers not importable: {type(err).__name__}: {err}")
    return SentenceTransformer(str(path), device="cpu")


def jaxmt_outputs(pretrained, texts):
    """jaxmt's BERT on `texts` padded to the longest: (tokens, last hidden states, pooled output), numpy."""
    tokens = pretrained.tokenizer(texts, padding=True, return_tensors="np")
    out = BertModel(pretrained.config).apply({"params": pretrained.params}, tokens["input_ids"],
                                             tokens["attention_mask"], tokens["token_type_ids"])
    return tokens, np.asarray(out.last_hidden_state), np.asarray(out.pooler_output)


@requires_torch
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_loads_in_pytorch_bert_and_sentence_transformers_as_jaxmt_computes_it(tiny_bert, tmp_path, pooling):
    import torch
    from transformers import BertModel as TorchBertModel

    path = save_hf_model(tmp_path / "export", tiny_bert.params, tiny_bert.config, tiny_bert.tokenizer,
                         sentence_pooling=pooling, max_seq_length=64)
    tokens, hidden, pooled = jaxmt_outputs(tiny_bert, SENTENCES)
    torch_model, info = TorchBertModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the pooler included: nothing initialised anew
    with torch.no_grad():
        reference = torch_model.eval()(**{k: torch.from_numpy(v) for k, v in tokens.items()})
    mask = tokens["attention_mask"][..., None]
    np.testing.assert_allclose(reference.last_hidden_state.numpy() * mask, hidden * mask, atol=1e-5)
    np.testing.assert_allclose(reference.pooler_output.numpy(), pooled, atol=1e-5)

    key = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}[pooling]
    assert json.loads((path / "1_Pooling" / "config.json").read_text())[key] is True
    embeddings = sentence_transformer(path).encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(embeddings, np.asarray(pool(hidden, tokens["attention_mask"], pooling)), atol=1e-5)


@requires_torch
def test_a_model_without_pooler_is_exported_without_one_and_says_so(tiny_bert, tmp_path):
    from transformers import BertModel as TorchBertModel

    encoder = {k: v for k, v in tiny_bert.params.items() if k != "pooler"}
    path = save_hf_model(tmp_path / "export", tiny_bert.params, tiny_bert.config, tiny_bert.tokenizer,
                         sentence_pooling="mean")
    path = save_hf_model(path, encoder, tiny_bert.config, tiny_bert.tokenizer)  # again, over the first export
    assert json.loads((path / "config.json").read_text())["jaxmt_export"]["add_pooling_layer"] is False
    assert "pooler" not in load_pretrained(str(path)).params
    _, info = TorchBertModel.from_pretrained(path, add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # No sentence pooling given: the first export's sentence-transformers files are gone, not left to mislead.
    assert not any((path / name).exists() for name in ("modules.json", "sentence_bert_config.json", "1_Pooling"))
    with pytest.raises(ValueError, match="sentence_pooling must be one of"):
        save_hf_model(path, encoder, tiny_bert.config, tiny_bert.tokenizer, sentence_pooling="max")


@pytest.fixture(scope="module")
def sts_run(tmp_path_factory, tiny_bert_dir):
    """A two-step run of the STS task alone (cosine head, mean pooling) on the tiny BERT and the demo data."""
    from jaxmt.inference import TrainedModel
    from jaxmt.training.trainer import train_and_evaluate

    config = tiny_config(tiny_bert_dir, **{"task_names": ("sts",), "num_steps": 2, "eval_every": 2,
                                           "checkpoint_every": 2, "tasks.sts.head": "cosine",
                                           "model.pair_mode": "siamese", "optim.learning_rate": 1e-3})
    workdir = str(tmp_path_factory.mktemp("sts_run") / "run")
    train_and_evaluate(config, workdir)
    return TrainedModel(workdir, "latest")


def test_exported_run_has_the_source_pooler_and_sentence_transformers_gives_its_embeddings(sts_run, tiny_bert,
                                                                                            tmp_path):
    path = sts_run.export_encoder(str(tmp_path / "export"))
    exported = load_pretrained(path)
    chex.assert_trees_all_equal(exported.params["pooler"], tiny_bert.params["pooler"])  # the source model's own
    fine_tuned = jax.device_get(sts_run.run.params["backbone"]["encoder"]["bert"])
    chex.assert_trees_all_close({k: exported.params[k] for k in fine_tuned}, fine_tuned, atol=0)
    assert not np.array_equal(exported.params["encoder"]["layer"]["0"]["output"]["dense"]["kernel"],
                              tiny_bert.params["encoder"]["layer"]["0"]["output"]["dense"]["kernel"])  # trained
    assert json.loads(open(f"{path}/sentence_bert_config.json").read())["max_seq_length"] == 64

    tokens = sts_run.run.tokenizer(SENTENCES, padding=True, return_tensors="np")
    batch = {k: tokens[k][:, None] for k in ("input_ids", "attention_mask", "token_type_ids")}
    ours = sts_run.run.model.features(sts_run.run.params, batch, rng=None, deterministic=True)[:, 0]
    embeddings = sentence_transformer(path).encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(embeddings, np.asarray(ours), atol=1e-5)
