"""Metrics to a JSON-lines file and TensorBoard event files in the workdir (process 0 only).

Hand-written rather than `clu.metric_writers`: clu's TensorBoard writer needs TensorFlow, which jaxmt
does not install, and no clu writer drops the rows a resumed run writes again; tensorboardX writes
the event files.

The workdir is any `etils.epath` path. On a local folder metrics.jsonl is appended to and tensorboardX writes
its event file in place. Elsewhere (gs://...), where files cannot be appended to and tensorboardX has no epath
backend, both are kept locally (the rows in memory, the event file in a temporary folder) and uploaded whole,
at most every `UPLOAD_SECONDS` and when the writer closes: a preempted run loses at most that much of its
curves, and a resumed run rewrites from its checkpoint's step anyway.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np
from etils import epath

from jaxmt.checkpointing.workdir import write_text
from jaxmt.paths import is_local

UPLOAD_SECONDS = 60.0
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """`write(step, scalars)` appends to `metrics.jsonl` and the TensorBoard log."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None, resume_step: int | None = None) -> None:
        """`resume_step`: the step a run restarts from; rows after it (written before a kill and about to be
        written again) are dropped, so metrics.jsonl never holds a step twice."""
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            root = epath.Path(workdir)
            root.mkdir(parents=True, exist_ok=True)
            self._path = root / METRICS_FILE
            self._tb_target = root / TENSORBOARD_DIR
            self._local = is_local(workdir)
            if resume_step is not None and self._path.exists():
                keep_rows_up_to(self._path, resume_step)
            if self._local:
                self._jsonl = open(self._path, "a")
                tb_dir = os.fspath(self._tb_target)
            else:
                self._rows = self._path.read_text() if self._path.exists() else ""
                self._tb_staging = tempfile.mkdtemp(prefix="jaxmt-tensorboard-")
                tb_dir = self._tb_staging
                self._uploaded = time.monotonic()
            self._tb = SummaryWriter(tb_dir)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        row = json.dumps({"step": int(step), "time": time.time(), **values}) + "\n"
        for key, value in values.items():
            self._tb.add_scalar(key, value, int(step))
        self._tb.flush()
        if self._local:
            self._jsonl.write(row)
            self._jsonl.flush()
            return
        self._rows += row
        if time.monotonic() - self._uploaded >= UPLOAD_SECONDS:
            self._upload()

    def _upload(self) -> None:
        """Copies the rows and the event files to a non-local workdir, whole (object stores cannot append)."""
        self._path.write_text(self._rows)
        for name in os.listdir(self._tb_staging):
            self._tb_target.mkdir(parents=True, exist_ok=True)
            with open(os.path.join(self._tb_staging, name), "rb") as f:
                (self._tb_target / name).write_bytes(f.read())
        self._uploaded = time.monotonic()

    def close(self) -> None:
        if not self.enabled:
            return
        self._tb.close()
        if self._local:
            self._jsonl.close()
        else:
            self._upload()
            shutil.rmtree(self._tb_staging, ignore_errors=True)


def keep_rows_up_to(path: str | os.PathLike, step: int) -> None:
    """Rewrites a metrics.jsonl without its rows after `step` (atomically: a temporary file, then a rename)."""
    path = epath.Path(path)
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        write_text(path, "".join(kept))
