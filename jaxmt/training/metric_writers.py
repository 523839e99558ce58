"""Metrics to a JSON-lines file and TensorBoard event files in the workdir (process 0 only).

Hand-written rather than `clu.metric_writers`: clu's TensorBoard writer needs TensorFlow, which jaxmt
does not install, and no clu writer drops the rows a resumed run writes again; tensorboardX writes
the event files.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


class MetricWriter:
    """`write(step, scalars)` appends to `metrics.jsonl` and the TensorBoard log."""

    def __init__(self, workdir: str, enabled: bool | None = None, resume_step: int | None = None) -> None:
        """`resume_step`: the step a run restarts from; rows after it (written before a kill and about to be
        written again) are dropped, so metrics.jsonl never holds a step twice."""
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.jsonl")
            if resume_step is not None and os.path.exists(path):
                keep_rows_up_to(path, resume_step)
            self._jsonl = open(path, "a")
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            self._tb.add_scalar(key, value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def keep_rows_up_to(path: str, step: int) -> None:
    """Rewrites a metrics.jsonl without its rows after `step` (atomically: a temporary file, then a rename)."""
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
