"""A `jax.profiler` trace of chosen training steps (`config.profile_steps = (first, count)`), in WORKDIR/profile.

The trace holds every step of the window with its host and device activity, each step marked by a
`StepTraceAnnotation`, so TensorBoard's profiler (`tensorboard --logdir WORKDIR/profile`, with the
tensorboard-plugin-profile package) shows the step-time breakdown, and `perfetto_trace.json.gz` opens in
https://ui.perfetto.dev. Steps are numbered as in metrics.jsonl (the first step is 1); start after the first
step, which compiles. A workdir that is not a local folder (gs://...) gets the trace written locally first and
copied when the window ends: the profiler writes through the local filesystem.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Any

import jax
from etils import epath
from ml_collections import ConfigDict

from jaxmt.errors import ConfigError
from jaxmt.paths import copy_tree, is_local

log = logging.getLogger(__name__)

PROFILE_DIR = "profile"


def profile_window(config: ConfigDict) -> tuple[int, int]:
    """`config.profile_steps` checked: (first step, count), count 0 = off."""
    value = tuple(config.get("profile_steps", (0, 0)))
    if len(value) != 2 or not all(isinstance(v, int) for v in value) or value[1] < 0 or (value[1] and value[0] < 1):
        raise ConfigError(f"config.profile_steps = {value}; expected (first step >= 1, number of steps >= 0), "
                          "e.g. (10, 5); (0, 0) = off")
    return value


class StepProfiler:
    """Starts a trace before the window's first step and stops it after its last one has finished.

    `begin(step)` before a step's batch is fetched, `end(step, state)` once the step is dispatched: the
    trace stops only when `state` is ready, so the last step's device work is in it."""

    def __init__(self, config: ConfigDict, workdir: str | os.PathLike) -> None:
        self.first, count = profile_window(config)
        self.last = self.first + count - 1 if count else -1
        self.target = epath.Path(workdir) / PROFILE_DIR
        self._local: str | None = None
        self._annotation = contextlib.ExitStack()

    def begin(self, step: int) -> None:
        if not self.first <= step <= self.last:
            return
        if self._local is None:  # the window's first step, or the first one of a run resumed inside it
            self._local = os.fspath(self.target) if is_local(self.target) else tempfile.mkdtemp(prefix="jaxmt-")
            os.makedirs(self._local, exist_ok=True)
            jax.profiler.start_trace(self._local, create_perfetto_trace=True)
            log.info("profiling steps %d-%d into %s", step, self.last, self.target)
        self._annotation.enter_context(jax.profiler.StepTraceAnnotation("train", step_num=step))

    def end(self, step: int, state: Any) -> None:
        if self._local is None or not self.first <= step <= self.last:
            return
        self._annotation.close()
        if step == self.last:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        """Stops an open trace (the window's end, or a run that stops inside it) and copies it to the workdir."""
        if self._local is None:
            return
        self._annotation.close()
        jax.profiler.stop_trace()
        if not is_local(self.target):
            copy_tree(self._local, self.target)
            shutil.rmtree(self._local, ignore_errors=True)
        log.info("profile written to %s (tensorboard --logdir %s, or perfetto_trace.json.gz in ui.perfetto.dev)",
                 self.target, self.target)
        self._local = None
