"""`model.name` as a Hugging Face Hub id: read from the Hub cache's snapshot layout offline, fetched once
online (one weight file, never a PyTorch pickle), and the one-line error when offline and not cached."""

from __future__ import annotations

import hashlib
import os
import types

import numpy as np
import pytest
from conftest import demo_words

from jaxmt.models.pretrained import ModelError, hub_repo, load_pretrained, resolve_model_dir, write_random_bert

REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_model(cache, repo: str, source) -> None:
    """Lays out the model directory `source` as huggingface_hub caches a download of `repo` at REVISION:
    blobs named by content hash, snapshots/REVISION/<file> symlinks to them, refs/main naming REVISION."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True)
    (root / "snapshots" / REVISION).mkdir(parents=True)
    for file in source.iterdir():
        blob = root / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        os.symlink(os.path.relpath(blob, root / "snapshots" / REVISION), root / "snapshots" / REVISION / file.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HUB_CACHE holding org/tiny-bert (a tiny random BERT), offline; returns (cache, the source dir)."""
    source = write_random_bert(tmp_path / "source", demo_words(), seed=3)
    cache_model(tmp_path / "hub", "org/tiny-bert", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub", source


def test_hub_id_loads_offline_from_the_cache_snapshot(hub_cache):
    cache, source = hub_cache
    snapshot = cache / "models--org--tiny-bert" / "snapshots" / REVISION
    direct = load_pretrained(str(source))
    for name in ("org/tiny-bert", f"org/tiny-bert@{REVISION}", "org/tiny-bert@main"):
        model = load_pretrained(name)
        assert model.path == snapshot
        np.testing.assert_array_equal(*(np.concatenate([np.ravel(v) for v in _leaves(m.params)])
                                        for m in (model, direct)))
        assert model.tokenizer("a fine film")["input_ids"] == direct.tokenizer("a fine film")["input_ids"]
    assert resolve_model_dir(str(source)) == source  # a local folder is still a folder


def _leaves(tree):
    for key in sorted(tree):
        yield from _leaves(tree[key]) if isinstance(tree[key], dict) else [tree[key]]


def test_offline_and_not_cached_is_one_line_naming_the_id_and_how_to_get_it(hub_cache):
    cache, _ = hub_cache
    with pytest.raises(ModelError) as err:
        resolve_model_dir("google-bert/bert-base-uncased")
    message = str(err.value)
    assert "\n" not in message and f"'google-bert/bert-base-uncased' is not in the Hugging Face cache ({cache})" \
        in message
    assert "HF_HUB_OFFLINE is set" in message and "huggingface-cli download google-bert/bert-base-uncased" in message
    with pytest.raises(ModelError, match=r"'org/tiny-bert@v2' is not in the Hugging Face cache .*"
                                         r"`huggingface-cli download org/tiny-bert --revision v2`"):
        resolve_model_dir("org/tiny-bert@v2")  # another revision is another snapshot
    with pytest.raises(ModelError, match="neither a known alias .*, nor a directory, nor a Hugging Face Hub id"):
        resolve_model_dir("runs/nowhere/hf_model")  # two slashes: a path, never a Hub id


@pytest.mark.parametrize("name, repo", [
    ("bert-base-uncased", ("bert-base-uncased", None)),
    ("google-bert/bert-base-uncased", ("google-bert/bert-base-uncased", None)),
    ("sentence-transformers/all-MiniLM-L6-v2@refs/pr/1", ("sentence-transformers/all-MiniLM-L6-v2", "refs/pr/1")),
    ("./bert", None), ("/models/bert", None), ("~/bert", None), ("a/b/c", None), ("bert@", None), ("a--b", None),
])
def test_which_names_read_as_hub_ids(name, repo):
    assert hub_repo(name) == repo


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online mode with HfApi.model_info and snapshot_download faked: records what would be fetched."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fetched = {}
    source = write_random_bert(tmp_path / "snapshot", demo_words(), seed=3)

    def snapshot_download(repo, revision=None, cache_dir=None, allow_patterns=None, local_files_only=False):
        fetched.update(repo=repo, revision=revision, patterns=allow_patterns, local_files_only=local_files_only)
        return str(source)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return fetched


def _repo_files(monkeypatch, files):
    import huggingface_hub

    siblings = [types.SimpleNamespace(rfilename=f) for f in files]
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo, revision=None: types.SimpleNamespace(siblings=siblings))


def test_online_fetches_config_tokenizer_and_one_weight_file(online, monkeypatch):
    _repo_files(monkeypatch, ["config.json", "flax_model.msgpack", "model.safetensors", "pytorch_model.bin",
                              "tf_model.h5", "tokenizer.json", "vocab.txt"])
    load_pretrained("bert-base-uncased@v1")
    assert online["repo"] == "bert-base-uncased" and online["revision"] == "v1" and not online["local_files_only"]
    assert "model.safetensors" in online["patterns"] and "config.json" in online["patterns"]
    assert not {"flax_model.msgpack", "pytorch_model.bin", "tf_model.h5"} & set(online["patterns"])
    _repo_files(monkeypatch, ["config.json", "flax_model.msgpack", "vocab.txt"])
    resolve_model_dir("org/flax-only")
    assert "flax_model.msgpack" in online["patterns"]
    resolve_model_dir("org/flax-only", weights=False)  # a tokenizer only: no weights fetched
    assert not {"flax_model.msgpack", "model.safetensors"} & set(online["patterns"])
    _repo_files(monkeypatch, ["config.json", "pytorch_model.bin", "vocab.txt"])
    with pytest.raises(ModelError, match=r"'org/torch-only': the Hub repository lacks config.json or a weight "
                                         r"file jaxmt reads \(model.safetensors or flax_model.msgpack; no PyTorch"):
        resolve_model_dir("org/torch-only")
