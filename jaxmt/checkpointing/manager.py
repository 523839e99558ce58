"""Orbax checkpoints of a run: the latest K train states, and the best params by dev metric.

`workdir/checkpoints/` holds full train states (params, optimizer state, step) for
resumption; `workdir/best/` holds the params of the best evaluation so far with its score.
Orbax finalises each checkpoint atomically, so a run killed mid-save leaves the previous
one intact. The workdir is any `etils.epath` path (a local folder, or gs://... on a pod, which Orbax
writes through TensorStore's GCS driver). Saves are asynchronous on one process and on many: training
goes on while the arrays are written, and `wait()` (which the loop calls before it returns, stops or
exits) blocks until the last save is committed on every process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxmt.paths import is_local

log = logging.getLogger(__name__)

ASYNC_TIMEOUT_SECONDS = 1800  # the longest an async save's commit may wait for every process to finish writing


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings: restore writes straight into sharded arrays."""
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpoints:
    """The two checkpoint managers of a workdir."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 2, read_only: bool = False) -> None:
        root = epath.Path(os.path.abspath(workdir) if is_local(workdir) else workdir)
        create = not read_only
        # The commit of an async save waits at a barrier of all processes, which once timed out on a loaded
        # 2-core host (tests/test_multihost.py); it gets ASYNC_TIMEOUT_SECONDS, and those tests pass async.
        async_options = ocp.options.AsyncOptions(timeout_secs=ASYNC_TIMEOUT_SECONDS)
        # Each manager's barriers get their own names: both save at an evaluation step, and Orbax names an async
        # commit's barrier by the step alone ("_async_write_complete.6 is already ongoing" on 2 processes).
        barriers = lambda name: ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)  # noqa: E731
        self.latest = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, read_only=read_only,
                                                 enable_async_checkpointing=True, async_options=async_options,
                                                 multiprocessing_options=barriers("latest")),
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=create, read_only=read_only,
                                                 enable_async_checkpointing=True, async_options=async_options,
                                                 multiprocessing_options=barriers("best")),
        )

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, force: bool = False) -> None:
        self.latest.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        step = self.latest.latest_step() if step is None else step
        return self.latest.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_or_init(self, abstract_state: Any, shardings: Any, init: Callable[[], Any]) -> tuple[Any, int]:
        """(state, step): the latest checkpoint restored straight into `shardings`, else `init()` at step 0."""
        step = self.latest_step()
        if step is None:
            return init(), 0
        log.info("resuming from %s at step %d", self.latest.directory, step)
        return self.restore(abstract_like(abstract_state, shardings), step), step

    def best_score(self) -> float | None:
        step = self.best.latest_step()
        if step is None:
            return None
        meta = self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return float(meta["score"])

    def save_best(self, step: int, params: Any, score: float, metrics: dict[str, float]) -> None:
        meta = {"step": int(step), "score": float(score), "metrics": {k: float(v) for k, v in metrics.items()}}
        self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

    def restore_params(self, which: str, abstract_params: Any) -> tuple[Any, int]:
        """Params of the 'best' or 'latest' checkpoint, and its step."""
        if which == "best":
            step = self.best.latest_step()
            if step is None:
                raise FileNotFoundError("no best checkpoint in this workdir (no evaluation has run yet)")
            restored = self.best.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params)))
            return restored["params"], step
        if which == "latest":
            step = self.latest.latest_step()
            if step is None:
                raise FileNotFoundError("no checkpoint in this workdir")
            restored = self.latest.restore(step, args=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args=jax.tree_util.tree_map(
                    lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), {"params": abstract_params}),
                partial_restore=True,
            ))
            return restored["params"], step
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {which!r}")

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
