"""Batches built ahead: the next steps' device batches are made on a background thread while the current
step runs, so the training loop's thread never waits for Python batch building.

`Program.batch(step)` is a pure function of the step that returns device arrays, so building it early changes
nothing a run computes: the same batches, in the same order, and a resumed run still equals an uninterrupted
one. `Prefetcher` runs it for the loop's steps in order, at most `depth` steps ahead (a bounded queue, so host
and device memory stay bounded); `depth=0` builds each batch when it is asked for, in the caller's thread.

Why a thread and not grain's worker processes: a batch here is small (3 tasks x ~16 examples) and ends as
device arrays (`make_array_from_process_local_data`, which only the process that owns the devices can make);
a worker process would pickle every host batch back to the main process, which costs more than building it
(benchmarks/input_pipeline.py measures both, docs/performance.md). A thread shares the splits and the sampler
without copies, runs the device transfer too, and most of what it runs (numpy, JAX's transfers) releases the
GIL.

What the loop relies on: an error raised while building a batch is raised again, the same exception object,
in the thread that asks for that step's batch (so the command line prints the same one-line error as without
prefetch); `close()` (or leaving the `with` block) stops the thread and waits for it, so it never outlives the
loop, whether the loop finished, stopped on a signal or raised.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ml_collections import ConfigDict

_POLL_SECONDS = 0.05  # how often a blocked producer checks whether it was asked to stop


def prefetch_depth(config: ConfigDict) -> int:
    """`config.data.prefetch` (every trainer's base config sets it); 0 for a config without a `data` block (the
    loop's own tests run toy programs on bare configs)."""
    data = config.get("data")
    return int(data.get("prefetch", 0)) if data is not None else 0


class Prefetcher:
    """`batch(step)` for each of `steps`, in order, built up to `depth` steps ahead on one daemon thread.

    `get(step)` returns that step's batch (steps must be asked for in order) and records how long the caller
    waited for it (`wait_seconds`, one entry a step): with prefetch at steady state, the time a queue hand-over
    takes; without, the whole build.
    """

    def __init__(self, batch: Callable[[int], Any], steps: Iterable[int], depth: int) -> None:
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self._batch, self._steps, self.depth = batch, list(steps), depth
        self._next = 0  # index in `_steps` of the next step get() hands out
        self.wait_seconds: list[float] = []
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread = None
        if depth > 0 and self._steps:
            self._thread = threading.Thread(target=self._produce, name="jaxmt-prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        for step in self._steps:
            if self._stop.is_set():
                return
            try:
                item = (step, self._batch(step), None)
            except BaseException as error:  # handed to the consumer, which raises it in its own thread
                item = (step, None, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def get(self, step: int) -> Any:
        """The batch of `step`, the next of `steps`; an error its build raised is raised here."""
        if self._next >= len(self._steps) or self._steps[self._next] != step:
            expected = self._steps[self._next] if self._next < len(self._steps) else "none (all handed out)"
            raise ValueError(f"batches are handed out in order: asked for step {step}, the next is {expected}")
        self._next += 1
        start = time.perf_counter()
        if self._thread is None:
            batch = self._batch(step)
        else:
            built_step, batch, error = self._get_item()
            if error is not None:
                raise error
            assert built_step == step, (built_step, step)  # one producer, in order
        self.wait_seconds.append(time.perf_counter() - start)
        return batch

    def _get_item(self) -> tuple:
        while True:
            try:
                return self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # cannot happen while it still has steps
                    raise RuntimeError("the prefetch thread ended without handing over the next batch") from None

    def close(self) -> None:
        """Stops the thread (its batch in progress is finished, then dropped) and waits for it to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        while not self._queue.empty():  # drop the built batches' device buffers now
            self._queue.get_nowait()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
