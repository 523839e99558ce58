"""Running a model over whole splits: predictions in data order, and the dev metrics.

`Predictor` is the one evaluation path: the trainer's dev evaluation, `python -m jaxmt.evaluate` and
`jaxmt.inference.TrainedModel` (so `python -m jaxmt.predict`) all run their splits through it, in rows sized to
the examples when the run packs (`jaxmt.data.eval_batches`), else in padded buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.data.eval_batches import EvalPacking, eval_packing, sized_eval_batches
from jaxmt.data.sampling import eval_batches
from jaxmt.data.schema import TaskSpec
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.host_data import put_host_batch
from jaxmt.parallel.mesh import batch_sharding, data_parallel_size, replicated
from jaxmt.training.losses import predict as metric_prediction
from jaxmt.training.metrics import task_metric
from jaxmt.training.step import make_predict_step

_IN_FLIGHT = 2  # batches dispatched ahead of the one read back: the host packs the next while the device runs

Readout = Callable[[TaskSpec, jax.Array], jax.Array]  # a task's model outputs -> what a caller reads per example


def run_eval_packing(config: ConfigDict, tasks: Iterable[str], mesh: Mesh) -> dict[str, EvalPacking] | None:
    """The sized-row packing a run's tasks are evaluated in: rows from `data.pack_length`, one row group a
    data-parallel device, as the trainer packs its dev sets; None (padded buckets) when `data.packing` is off."""
    if not config.data.get("packing", False):
        return None
    packing = eval_packing(config.data.pack_length, data_parallel_size(mesh))
    return dict.fromkeys(tasks, packing)


class Predictor:
    """Jitted predict steps, one per task: compiled once per bucket length (padded batches), or once per task
    and batch shape with packed batches (`layouts`: each task's `EvalPacking`, rows sized to the examples, from
    `run_eval_packing`).

    `readout` turns a task's outputs into what `predict` returns per example: by default the prediction the
    dev metric scores (class id, 0/1, score); `jaxmt.inference.readable_scores` gives probabilities."""

    def __init__(self, model: MultitaskModel, mesh: Mesh, batch_size: int, buckets, pad_id: int,
                 layouts: dict[str, EvalPacking] | None = None,
                 readout: Readout = metric_prediction) -> None:
        self.model, self.mesh = model, mesh
        self.batch_size, self.buckets, self.pad_id = batch_size, tuple(buckets), pad_id
        self.packing = layouts
        self._steps = {
            # params as they come (replicated, FSDP- or tensor-sharded); batches split over the data axes
            task: jax.jit(make_predict_step(model, task, readout), in_shardings=(None, batch_sharding(mesh)),
                          out_shardings=replicated(mesh))
            for task in model.specs
        }

    def batches(self, task: str, split: EncodedSplit):
        """(indices, host batch) over every example of `split` once: sized rows when packing, else buckets."""
        if self.packing:
            return sized_eval_batches(split, self.packing[task], self.pad_id)
        return eval_batches(split, self.batch_size, self.buckets, self.pad_id)

    def predict(self, params: dict, task: str, split: EncodedSplit) -> np.ndarray:
        """The readout of every example of `split`, in the split's order: [N] (or [N, K] for class
        probabilities), in the readout's dtype (the labels' for the default one); [0] of the labels' dtype when
        `split` is empty."""
        out = None
        queued: list = []  # (indices, their slots, readouts not read back yet)

        def read_back(idx, slots, values) -> None:
            nonlocal out
            values = np.asarray(jax.device_get(values))[slots]
            if out is None:
                out = np.zeros((len(split.data), *values.shape[1:]), values.dtype)
            out[idx] = values

        for idx, batch in self.batches(task, split):
            queued.append((idx, batch["example_mask"] > 0, self.predict_batch(params, task, batch)))
            if len(queued) > _IN_FLIGHT:
                read_back(*queued.pop(0))
        for item in queued:
            read_back(*item)
        if out is None:  # an empty split: nothing ran, so no readout says its shape
            out = np.zeros(0, split.data.spec.label_dtype)
        return out

    def predict_batch(self, params: dict, task: str, batch: dict) -> jax.Array:
        """Readouts for one host batch (padded or packed), not waited for: a caller may queue several."""
        return self._steps[task](params, put_host_batch(batch, batch_sharding(self.mesh)))

    def evaluate(self, params: dict, splits: dict[str, EncodedSplit]) -> tuple[dict[str, float], dict]:
        """Metrics {task: accuracy or pearson, 'mean': their mean} and predictions by task."""
        metrics, predictions = {}, {}
        for task, split in splits.items():
            predictions[task] = self.predict(params, task, split)
            if split.data.labels is not None:
                metrics[task] = task_metric(split.data.spec, predictions[task], split.data.labels)
        if metrics:
            metrics["mean"] = float(np.mean([metrics[t] for t in splits if t in metrics]))
        return metrics, predictions
