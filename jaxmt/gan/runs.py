"""What the GAN trainer and the baseline share around their step: resumption, fault checks, dev passes, results."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmt.checkpointing.manager import Checkpoints
from jaxmt.checkpointing.workdir import RESULTS_FILE, write_json
from jaxmt.data.sampling import eval_batches
from jaxmt.data.tokenization import EncodedSplit
from jaxmt.parallel.mesh import batch_sharding
from jaxmt.training.faults import PreemptionGuard, check_finite, save_or_stop

log = logging.getLogger(__name__)


class RunCheckpoints:
    """Orbax checkpoints of a run when `config.gan.save_checkpoints`, else nothing (sweeps keep results only)."""

    def __init__(self, config: ConfigDict, workdir: str) -> None:
        self.every, self.num_steps, self.workdir = config.checkpoint_every, config.num_steps, workdir
        self.manager = Checkpoints(workdir, keep=config.keep_checkpoints) if config.gan.save_checkpoints else None

    def restore_or_init(self, abstract_state: Any, shardings: Any, init: Callable[[], Any]) -> tuple[Any, int]:
        """(state, first step): the latest checkpoint's state, or `init()` at step 0."""
        if self.manager is None:
            return init(), 0
        return self.manager.restore_or_init(abstract_state, shardings, init)

    def preemption_guard(self) -> contextlib.AbstractContextManager:
        """A `PreemptionGuard` when this run checkpoints (a signal then saves and stops it), else nothing:
        a run without checkpoints (a sweep's) has nothing to resume from and dies on the signal as usual."""
        return PreemptionGuard() if self.manager else contextlib.nullcontext()

    def after_step(self, done: int, state: Any, stop_signal: str | None = None) -> None:
        """Saves when due; after a signal (only caught when checkpointing), saves and raises `Preempted`."""
        if self.manager:
            save_due = done % self.every == 0 or done == self.num_steps
            save_or_stop(self.manager, done, state, save_due, stop_signal, self.workdir)

    def close(self) -> None:
        if self.manager:
            self.manager.wait()
            self.manager.close()


def check_gan_finite(step: int, nonfinite: Any, mode: str, skipped: list[int]) -> None:
    """`faults.check_finite` with the GAN's learning-rate fields in the hint."""
    check_finite(step, nonfinite, mode, skipped, hint="Lower the learning rates (optim.learning_rate, "
                 "gan.g_learning_rate) or set --config.on_nonfinite=skip")


def split_outputs(fn: Callable, params: Any, split: EncodedSplit, batch_size: int, buckets, pad_id: int,
                  mesh: Mesh) -> np.ndarray:
    """`fn(params, batch)` over a whole split, rows back in the split's order ([N] or [N, D])."""
    sharding, out = batch_sharding(mesh), None
    for idx, batch in eval_batches(split, batch_size, buckets, pad_id):
        rows = np.asarray(jax.device_get(fn(params, jax.device_put(batch, sharding))))[: len(idx)]
        if out is None:
            out = np.zeros((len(split.data),) + rows.shape[1:], rows.dtype)
        out[idx] = rows
    return out


def write_results(workdir: str, results: dict) -> None:
    """results.json, from process 0 only."""
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, RESULTS_FILE), results)
