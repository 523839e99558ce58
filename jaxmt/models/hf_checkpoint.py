"""Hugging Face BERT checkpoints <-> jaxmt's BERT params, without transformers' Flax models.

Reads `model.safetensors` (PyTorch layout, `encoder.layer.0.attention.self.query.weight` [out, in],
LayerNorm `weight`/`bias` or the old `gamma`/`beta`, an optional `bert.` prefix; or Flax layout) and
`flax_model.msgpack` (flax.serialization), checks every parameter against the shapes config.json
implies, and returns FlaxBertModule's tree as float32 numpy arrays. Writes a directory (config.json,
PyTorch-layout model.safetensors, tokenizer files) that PyTorch's BertModel and FlaxBertModel both load,
and, given a sentence pooling, sentence-transformers too (modules.json, 1_Pooling/config.json,
sentence_bert_config.json, in the layout every sentence-transformers version reads).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxmt.models.bert import ACTIVATIONS, BertModel
from jaxmt.models.pretrained import ModelError

SAFETENSORS_FILE = "model.safetensors"
MSGPACK_FILE = "flax_model.msgpack"
SCOPES = ("embeddings", "encoder", "pooler")  # FlaxBertModule's top-level params
OPTIONAL_SCOPES = ("pooler",)  # sentence-embedding checkpoints may lack it; nothing but NSP reads it
FLAX_LEAVES = ("kernel", "embedding", "scale")  # names only a Flax-layout file has
SENTENCE_POOLINGS = ("mean", "cls")  # a run's pooling that a sentence-transformers Pooling module reproduces
ST_MODULES_FILE, ST_CONFIG_FILE, ST_POOLING_DIR = "modules.json", "sentence_bert_config.json", "1_Pooling"


def check_supported_config(config: Any, where: str) -> None:
    """A `ModelError` for BERT variants this encoder does not implement (`where` names config.json)."""
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ModelError(f"{where}: position_embedding_type is {position_type!r}; jaxmt's BERT has only "
                         "'absolute' position embeddings")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ModelError(f"{where}: is_decoder / add_cross_attention are set; jaxmt's BERT is an encoder only")
    if config.hidden_act not in ACTIVATIONS:
        raise ModelError(f"{where}: hidden_act {config.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")


def expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """'/'-joined parameter path -> shape, for a BERT (with pooler) of `config`."""
    ids = jnp.zeros((1, 1), jnp.int32)
    shapes = jax.eval_shape(lambda: BertModel(config).init(jax.random.PRNGKey(0), ids, ids)["params"])
    return {name: tuple(leaf.shape) for name, leaf in _flatten(shapes).items()}


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _flax_name(torch_name: str) -> tuple[str, bool] | None:
    """('/'-joined Flax path, whether to transpose) for a PyTorch BertModel tensor name; None if not a weight."""
    parts = torch_name.split(".")
    if parts[0] == "bert":
        parts = parts[1:]
    if not parts or parts[0] not in SCOPES:
        return None  # task heads (cls.*, qa_outputs.*) and the like
    *module, leaf = parts
    if module and module[-1] == "LayerNorm":
        renamed = {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}.get(leaf)
        return None if renamed is None else ("/".join(module + [renamed]), False)
    if module and module[-1].endswith("_embeddings") and leaf == "weight":
        return "/".join(module + ["embedding"]), False
    if leaf == "weight":
        return "/".join(module + ["kernel"]), True
    if leaf == "bias":
        return "/".join(module + ["bias"]), False
    return None  # buffers such as embeddings.position_ids


def params_from_torch_layout(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat Flax params ('/'-joined paths) from PyTorch BertModel tensors; kernels transposed to [in, out]."""
    flat = {}
    for torch_name, value in tensors.items():
        target = _flax_name(torch_name)
        if target is not None:
            name, transpose = target
            flat[name] = np.asarray(value.T if transpose else value)
    return flat


def torch_layout_from_params(params: Mapping) -> dict[str, np.ndarray]:
    """PyTorch BertModel tensor names and layouts ([out, in] weights) for a FlaxBertModule params tree."""
    tensors = {}
    for name, value in _flatten(params).items():
        *module, leaf = name.split("/")
        value = np.asarray(jax.device_get(value), np.float32)
        if leaf == "kernel":
            leaf, value = "weight", value.T
        elif leaf in ("embedding", "scale"):
            leaf = "weight"
        tensors[".".join(module + [leaf])] = np.ascontiguousarray(value)
    return tensors


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(file), framework="np") as handle:
        metadata = handle.metadata() or {}
    tensors = load_file(str(file))
    flax_layout = metadata.get("format") == "flax" or any(k.rsplit(".", 1)[-1] in FLAX_LEAVES for k in tensors)
    if flax_layout:
        return {name.replace(".", "/"): value for name, value in tensors.items()
                if name.split(".")[0] in SCOPES}
    return params_from_torch_layout(tensors)


def _read_msgpack(file: Path) -> dict[str, np.ndarray]:
    tree = flax.serialization.msgpack_restore(file.read_bytes())
    if "embeddings" not in tree and isinstance(tree.get("bert"), Mapping):  # saved from a model with heads
        tree = tree["bert"]
    return {name: value for name, value in _flatten(tree).items() if name.split("/")[0] in SCOPES}


def _checked(flat: dict[str, np.ndarray], config: Any, file: Path) -> dict:
    """The params as float32, after checking names and shapes against `config`."""
    want = expected_shapes(config)
    present_scopes = {name.split("/")[0] for name in flat}
    for name, shape in sorted(want.items()):  # sorted: the same first complaint every time
        scope = name.split("/")[0]
        if name not in flat:
            if scope in OPTIONAL_SCOPES and scope not in present_scopes:
                continue
            raise ModelError(f"{file}: parameter {name} is missing")
        if tuple(flat[name].shape) != shape:
            raise ModelError(f"{file}: parameter {name} has shape {tuple(flat[name].shape)}, but config.json "
                             f"implies {shape}")
    unexpected = sorted(set(flat) - set(want))
    if unexpected:
        raise ModelError(f"{file}: parameters {unexpected[:3]} are not part of a BERT of this config.json")
    return _unflatten({name: np.asarray(value, np.float32) for name, value in flat.items()})


def load_hf_params(path: str | os.PathLike, config: Any) -> dict:
    """FlaxBertModule's params tree (float32 numpy) from the directory `path`; safetensors before msgpack."""
    path = Path(path)
    check_supported_config(config, str(path / "config.json"))
    for file_name, read in ((SAFETENSORS_FILE, _read_safetensors), (MSGPACK_FILE, _read_msgpack)):
        file = path / file_name
        if not file.is_file():
            continue
        try:
            flat = read(file)
        except Exception as err:  # safetensors / msgpack raise several kinds; all mean "unreadable"
            raise ModelError(f"{file}: the weights could not be loaded ({type(err).__name__}: {err})") from None
        return _checked(flat, config, file)
    raise ModelError(f"{path}: no weights ({SAFETENSORS_FILE} or {MSGPACK_FILE})")


def save_hf_model(path: str | os.PathLike, encoder_params: Mapping, bert_config: Any, tokenizer: Any,
                  sentence_pooling: str | None = None, max_seq_length: int | None = None) -> Path:
    """Writes a Hugging Face BERT directory: config.json, PyTorch-layout model.safetensors, tokenizer files.

    `encoder_params` is FlaxBertModule's tree: embeddings, encoder and, when the model has one, pooler. A
    model without a pooler is written without one, and config.json says so (`jaxmt_export.add_pooling_layer:
    false`): never a random pooler, whose `pooler_output` would be noise that transformers loads without a
    warning. `BertModel.from_pretrained(path, add_pooling_layer=False)` reads such a folder without one (a
    top-level `add_pooling_layer` key would not do: transformers would take it for a config attribute and
    route that argument to the config instead of the model, which would then get a random pooler again).
    With `sentence_pooling` ('mean' or 'cls'), the folder is also a sentence-transformers model whose
    `encode` pools the last hidden states that way, over at most `max_seq_length` tokens.
    Stale files of another export in `path` (flax_model.msgpack, the sentence-transformers files) are
    removed: two weight files would leave the choice to the loader, a pooling config another run's pooling.
    """
    from safetensors.numpy import save_file

    if sentence_pooling is not None and sentence_pooling not in SENTENCE_POOLINGS:
        raise ValueError(f"sentence_pooling must be one of {SENTENCE_POOLINGS} or None, got {sentence_pooling!r}")
    params = dict(jax.device_get(encoder_params))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(bert_config)
    config.architectures = ["BertModel"]
    config.jaxmt_export = {"add_pooling_layer": "pooler" in params}
    config.save_pretrained(path)
    save_file(torch_layout_from_params(params), str(path / SAFETENSORS_FILE), metadata={"format": "pt"})
    (path / MSGPACK_FILE).unlink(missing_ok=True)
    tokenizer.save_pretrained(path)
    for stale in (ST_MODULES_FILE, ST_CONFIG_FILE):
        (path / stale).unlink(missing_ok=True)
    shutil.rmtree(path / ST_POOLING_DIR, ignore_errors=True)
    if sentence_pooling is not None:
        _write_sentence_transformers(path, sentence_pooling, config.hidden_size,
                                     max_seq_length or config.max_position_embeddings)
    return path


def _write_sentence_transformers(path: Path, pooling: str, hidden_size: int, max_seq_length: int) -> None:
    """modules.json (the BERT in `path`, then a Pooling module), its pooling config and sentence_bert_config.json:
    the classic layout (`pooling_mode_*_tokens`) that sentence-transformers 2 to 5 all read. No Normalize module:
    `encode` returns the pooled vector itself, as jaxmt's heads read it."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": ST_POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (path / ST_POOLING_DIR).mkdir()
    for file, content in ((path / ST_MODULES_FILE, modules), (path / ST_POOLING_DIR / "config.json", pooling_config),
                          (path / ST_CONFIG_FILE, {"max_seq_length": max_seq_length, "do_lower_case": False})):
        file.write_text(json.dumps(content, indent=2) + "\n")
