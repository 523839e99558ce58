"""Running a model over whole splits: predictions in data order, and the dev metrics."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from jaxmt.data.eval_batches import EvalPacking, eval_packing, sized_eval_batches
from jaxmt.data.packing import PackLayout
from jaxmt.data.sampling import eval_batches
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.host_data import put_host_batch
from jaxmt.parallel.mesh import batch_sharding, replicated
from jaxmt.training.metrics import task_metric
from jaxmt.training.step import make_predict_step

_IN_FLIGHT = 2  # batches dispatched ahead of the one read back: the host packs the next while the device runs


class Predictor:
    """Jitted predict steps, one per task: compiled once per bucket length (padded batches), or once per task
    and row length with packed batches (`layouts`: the task's packed `PackLayout`, e.g. from
    `jaxmt.data.packing.layout_for`, whose row length and groups `jaxmt.data.eval_batches.eval_packing`
    turns into rows sized to the examples; or an `EvalPacking` itself)."""

    def __init__(self, model: MultitaskModel, mesh: Mesh, batch_size: int, buckets, pad_id: int,
                 layouts: dict[str, PackLayout | EvalPacking] | None = None) -> None:
        self.model, self.mesh = model, mesh
        self.batch_size, self.buckets, self.pad_id = batch_size, tuple(buckets), pad_id
        self.packing = None if layouts is None else {
            t: v if isinstance(v, EvalPacking) else eval_packing(v.length, v.groups) for t, v in layouts.items()}
        self._steps = {
            # params as they come (replicated, FSDP- or tensor-sharded); batches split over the data axes
            task: jax.jit(make_predict_step(model, task), in_shardings=(None, batch_sharding(mesh)),
                          out_shardings=replicated(mesh))
            for task in model.specs
        }

    def predict(self, params: dict, task: str, split: EncodedSplit) -> np.ndarray:
        """Predictions for every example of `split`, in the split's order."""
        out = np.zeros(len(split.data), dtype=split.data.spec.label_dtype)
        batches = (sized_eval_batches(split, self.packing[task], self.pad_id) if self.packing else
                   eval_batches(split, self.batch_size, self.buckets, self.pad_id))
        queued: list = []  # (indices, their slots, predictions not read back yet)
        for idx, batch in batches:
            queued.append((idx, batch["example_mask"] > 0, self.predict_batch(params, task, batch)))
            if len(queued) > _IN_FLIGHT:
                done_idx, slots, predictions = queued.pop(0)
                out[done_idx] = np.asarray(jax.device_get(predictions))[slots]
        for idx, slots, predictions in queued:
            out[idx] = np.asarray(jax.device_get(predictions))[slots]
        return out

    def predict_batch(self, params: dict, task: str, batch: dict) -> jax.Array:
        """Predictions for one host batch (padded or packed), not waited for: a caller may queue several."""
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
