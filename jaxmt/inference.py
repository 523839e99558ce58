"""Using a trained run: load a workdir once, then predict on raw sentences.

`TrainedModel(workdir)` rebuilds the run's model and tokenizer from the config it recorded
(WORKDIR/config.json) and restores the params of its best or latest checkpoint, read-only, as
`jaxmt.evaluate` does. `predict` returns what a reader of the answer wants rather than what a dev
metric scores: the class probabilities (sst), the paraphrase probability (para), the similarity score
in the task's range (sts). `python -m jaxmt.predict` is the command line over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.checkpointing.manager import Checkpoints, abstract_like
from jaxmt.checkpointing.workdir import read_run_config
from jaxmt.config_checks import check_ranges
from jaxmt.data.errors import DataError
from jaxmt.data.schema import BINARY, CLASSIFICATION, TaskData, TaskSpec
from jaxmt.data.sources import task_specs
from jaxmt.data.tokenization import encode_split
from jaxmt.errors import ConfigError
from jaxmt.models.hf_checkpoint import SENTENCE_POOLINGS, save_hf_model
from jaxmt.models.multitask import MultitaskModel
from jaxmt.models.pretrained import load_pretrained
from jaxmt.parallel.mesh import make_mesh
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor, run_eval_packing
from jaxmt.training.losses import predict as metric_prediction


@dataclasses.dataclass
class RestoredRun:
    """A trained run's model, params (on `mesh`), tokenizer and the step its checkpoint was saved at."""

    model: MultitaskModel
    params: Any
    step: int
    tokenizer: Any
    mesh: Mesh
    bert_config: Any  # transformers.BertConfig of the encoder
    pooler: Any = None  # the pretrained model's pooler (fine-tuning never trains one), for export; None: none


def restore_run(config: ConfigDict, workdir: str, checkpoint: str, specs: dict[str, TaskSpec]) -> RestoredRun:
    """The model `config` describes, with the params of `checkpoint` ('best' or 'latest') of `workdir`;
    nothing is written under the checkpoint folders."""
    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    pretrained = load_pretrained(config.model.name)
    model = setup.build_model(config, pretrained.config, specs)
    abstract = jax.eval_shape(lambda p: model.init(jax.random.PRNGKey(0), p), pretrained.params)
    shardings = setup.state_shardings(abstract, mesh)
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        params, step = checkpoints.restore_params(checkpoint, abstract_like(abstract, shardings))
    finally:
        checkpoints.close()
    return RestoredRun(model=model, params=params, step=int(step), tokenizer=pretrained.tokenizer, mesh=mesh,
                       bert_config=pretrained.config, pooler=pretrained.params.get("pooler"))


def readable_scores(spec: TaskSpec, outputs: jax.Array) -> jax.Array:
    """Class probabilities [B, K], the positive class's probability [B], or the score in range [B]."""
    if spec.kind == CLASSIFICATION:
        return jax.nn.softmax(outputs, axis=-1)
    if spec.kind == BINARY:
        return jax.nn.sigmoid(outputs)
    return metric_prediction(spec, outputs)


def format_scores(spec: TaskSpec, scores: np.ndarray) -> str:
    """One example's line: `class<TAB>p_0<TAB>...<TAB>p_K-1` (classification), else the one number."""
    if spec.kind == CLASSIFICATION:
        return "\t".join([str(int(np.argmax(scores)))] + [f"{p:.4f}" for p in scores])
    return f"{float(scores):.4f}"


def read_run(workdir: str) -> tuple[ConfigDict, dict[str, TaskSpec]]:
    """A workdir's recorded config, checked as a training run checks it, and its task specs."""
    config = read_run_config(workdir)
    check_ranges(config)
    setup.check_config(config)
    return config, task_specs(config)


class TrainedModel:
    """A trained multitask run, loaded once, predicting on lists of sentences (or sentence pairs)."""

    def __init__(self, workdir: str, checkpoint: str = "best") -> None:
        self.workdir = workdir
        self.config, self.specs = read_run(workdir)
        self.run = restore_run(self.config, workdir, checkpoint, self.specs)
        self.step = self.run.step
        self.is_demo = self.config.data.source == "demo"
        self._predictor = Predictor(self.run.model, self.run.mesh, self.config.eval_batch_size,
                                    self.config.data.buckets, self.run.tokenizer.pad_token_id,
                                    run_eval_packing(self.config, self.specs, self.run.mesh), readable_scores)

    def predict(self, task: str, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> np.ndarray:
        """Scores for each sentence of `texts` (single-sentence tasks) or pair (`texts[i]`, `texts_b[i]`):
        probabilities [N, K] (classification), the paraphrase probability [N] (binary), or scores [N]."""
        spec = self.task_spec(task)
        texts_a = [str(t).strip() for t in texts]
        pair_b = None if texts_b is None else [str(t).strip() for t in texts_b]
        check_texts(spec, texts_a, pair_b)
        if not texts_a:
            return np.zeros((0, spec.num_classes) if spec.kind == CLASSIFICATION else 0, np.float32)
        data = TaskData(spec=spec, split="predict", source="input", ids=[str(i) for i in range(len(texts_a))],
                        text_a=texts_a, text_b=pair_b, labels=None)
        encoded = encode_split(data, self.run.tokenizer, self.config.data.max_length,
                               setup.pair_mode(self.config, task))
        return self._predictor.predict(self.run.params, task, encoded).astype(np.float32)

    def task_spec(self, task: str) -> TaskSpec:
        return run_task_spec(self.specs, task)

    def export_encoder(self, path: str) -> str:
        """Writes the fine-tuned encoder as a Hugging Face BERT directory (config.json, model.safetensors,
        tokenizer) that `FlaxBertModel` / `BertModel` load, with the pretrained model's own pooler (none if it had
        none). With the run's pooling mean or cls it is also a sentence-transformers model whose `encode` gives the
        sentence embedding this run's heads read when it has no shared layers (`model.shared_layers=0`)."""
        encoder = dict(jax.device_get(self.run.params["backbone"]["encoder"]["bert"]))
        if self.run.pooler is not None:
            encoder["pooler"] = self.run.pooler
        pooling = self.config.model.pooling if self.config.model.pooling in SENTENCE_POOLINGS else None
        return str(save_hf_model(path, encoder, self.run.bert_config, self.run.tokenizer, sentence_pooling=pooling,
                                 max_seq_length=self.config.data.max_length))


def run_task_spec(specs: dict[str, TaskSpec], task: str) -> TaskSpec:
    """The spec of one of a run's tasks; a ConfigError naming the tasks it has otherwise."""
    if task not in specs:
        raise ConfigError(f"task {task!r}: this run trained {', '.join(sorted(specs))}")
    return specs[task]


def check_texts(spec: TaskSpec, texts_a: Sequence[str], texts_b: Sequence[str] | None) -> None:
    """A DataError unless the inputs fit the task: pairs for a pair task, no empty sentence."""
    if spec.is_pair and texts_b is None:
        raise DataError(f"task {spec.name!r} scores sentence pairs: give the second sentences too")
    if not spec.is_pair and texts_b is not None:
        raise DataError(f"task {spec.name!r} takes single sentences, not pairs")
    if texts_b is not None and len(texts_b) != len(texts_a):
        raise DataError(f"task {spec.name!r}: {len(texts_a)} first sentences but {len(texts_b)} second ones")
    for which, texts in (("", texts_a), ("second ", texts_b or [])):
        empty = [number for number, text in enumerate(texts, 1) if not text]
        if empty:
            raise DataError(f"task {spec.name!r}: {which}sentence {empty[0]} is empty")
