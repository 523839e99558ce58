"""Running a model over whole splits: predictions in data order, and the dev metrics."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from jaxmt.data.packing import PackLayout, packed_eval_batches
from jaxmt.data.sampling import eval_batches
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.models.multitask import MultitaskModel
from jaxmt.parallel.host_data import put_host_batch
from jaxmt.parallel.mesh import batch_sharding, replicated
from jaxmt.training.metrics import task_metric
from jaxmt.training.step import make_predict_step


class Predictor:
    """Jitted predict steps, one per task: compiled once per bucket length, or once per task with packed
    batches (`layouts`: the task's eval `PackLayout`, from `jaxmt.data.packing.layout_for`)."""

    def __init__(self, model: MultitaskModel, mesh: Mesh, batch_size: int, buckets, pad_id: int,
                 layouts: dict[str, PackLayout] | None = None) -> None:
        self.model, self.mesh = model, mesh
        self.batch_size, self.buckets, self.pad_id = batch_size, tuple(buckets), pad_id
        self.layouts = layouts
        self._steps = {
            # params as they come (replicated, FSDP- or tensor-sharded); batches split over the data axes
            task: jax.jit(make_predict_step(model, task), in_shardings=(None, batch_sharding(mesh)),
                          out_shardings=replicated(mesh))
            for task in model.specs
        }

    def predict(self, params: dict, task: str, split: EncodedSplit) -> np.ndarray:
        """Predictions for every example of `split`, in the split's order."""
        out = np.zeros(len(split.data), dtype=split.data.spec.label_dtype)
        batches = (packed_eval_batches(split, self.layouts[task], self.pad_id) if self.layouts else
                   eval_batches(split, self.batch_size, self.buckets, self.pad_id))
        for idx, batch in batches:
            out[idx] = np.asarray(jax.device_get(self.predict_batch(params, task, batch)))[: len(idx)]
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
