"""Dev-set metrics, computed on the host over a whole split (as the CS224N evaluation does)."""

from __future__ import annotations

import numpy as np

from jaxmt.data.schema import REGRESSION, TaskSpec


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (the correlation is undefined)."""
    x, y = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denom) if denom > 0 else 0.0


def task_metric(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
    return pearson(predictions, labels) if spec.kind == REGRESSION else accuracy(predictions, labels)
