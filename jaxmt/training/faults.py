"""What stops a run early on purpose: preemption signals and numerical faults.

SIGTERM (what a preemptible TPU VM or SLURM sends before it takes the machine) and SIGINT
(Ctrl-C) make the trainer save a checkpoint at the current step and exit with
`EXIT_PREEMPTED`; the same command then resumes exactly. A second signal acts at once.
On several processes a signal may reach one host a step before another: `StopVote` makes
every process act on the same step, so the collective checkpoint save never diverges.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2  # bad data, config or model: nothing was trained
EXIT_NONFINITE = 3  # a NaN/Inf loss or gradient stopped the run; the last good checkpoint is kept
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a signal stopped the run after saving; run the same command to resume


class Preempted(Exception):
    """Raised by the trainer after it saved a checkpoint in response to a signal."""

    def __init__(self, signal_name: str, step: int, workdir: str) -> None:
        super().__init__(f"stopped by {signal_name} at step {step}; checkpoint saved in {workdir}; "
                         "run the same command to resume")
        self.signal_name, self.step, self.workdir = signal_name, step, workdir


class NonFiniteError(RuntimeError):
    """A NaN or Inf in the loss or gradients (config.on_nonfinite='stop')."""


def check_finite(step: int, nonfinite: Any, mode: str, skipped_steps: list[int], what: str = "",
                 hint: str = "Lower the learning rate, or set --config.on_nonfinite=skip") -> None:
    """Acts on a step's NaN/Inf flag: raise (mode 'stop') or record the skipped step ('skip').

    Every train step in jaxmt keeps its old state when the flag is set, so the params (and the
    checkpoints) are the last good ones either way. `what` names the fault for the message.
    """
    if not bool(jax.device_get(nonfinite)):
        return
    what = what or "non-finite loss or gradient"
    if mode == "stop":
        raise NonFiniteError(f"step {step}: {what}; the update was not applied and the checkpoints hold the "
                             f"last good state. {hint}")
    log.warning("step %d: %s; update skipped (on_nonfinite='skip')", step, what)
    skipped_steps.append(step)


def save_or_stop(checkpoints: Any, step: int, state: Any, save_due: bool, stop_signal: str | None,
                 workdir: str) -> None:
    """The end of a training step: save when due or when a signal arrived; after a signal, wait for the
    write to finish and raise `Preempted`, so the same command resumes from exactly this step."""
    if save_due or stop_signal:
        checkpoints.save(step, state, force=True)
    if stop_signal:
        checkpoints.wait()
        raise Preempted(stop_signal, step, workdir)


class StopVote:
    """Agreement on when to stop: `poll(signal)` each step, on every process.

    One process: the signal it caught, at once. Several: each step every process casts its signal
    (0 for none) into a max-reduction over all devices, dispatched without waiting; `poll` returns the
    result of the previous step's vote, which every process reads at the same step. So all processes
    save the same step and stop, one step after the first signal anywhere.
    """

    def __init__(self) -> None:
        self.multi = jax.process_count() > 1
        self._pending = None
        if self.multi:
            from jax.sharding import Mesh, NamedSharding
            from jax.sharding import PartitionSpec as P

            mesh = Mesh(np.asarray(jax.devices()), ("processes",))
            self._sharding = NamedSharding(mesh, P("processes"))
            self._max = jax.jit(lambda votes: votes.max(), out_shardings=NamedSharding(mesh, P()))

    def poll(self, received: str | None) -> str | None:
        if not self.multi:
            return received
        signum = int(signal.Signals[received]) if received else 0
        local = np.full((jax.local_device_count(),), signum, np.int32)
        ballot = self._max(jax.make_array_from_process_local_data(self._sharding, local, (jax.device_count(),)))
        previous, self._pending = self._pending, ballot
        agreed = int(jax.device_get(previous)) if previous is not None else 0
        if not agreed:
            return None
        return received or f"{signal.Signals(agreed).name} (received by another process)"


class PreemptionGuard:
    """Context manager: records SIGTERM / SIGINT instead of dying, for the loop to act on."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        for sig, handler in self._previous.items():  # a second signal is not caught again
            signal.signal(sig, handler)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
            for sig in self.SIGNALS:
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def user_facing_errors() -> Iterator[None]:
    """For command lines: a one-line message and a distinct exit status instead of a traceback."""
    from jaxmt.data.errors import DataError
    from jaxmt.errors import ConfigError
    from jaxmt.models.pretrained import ModelError
    from jaxmt.parallel.mesh import MeshError

    try:
        yield
    except Preempted as stop:
        print(f"jaxmt: {stop}", file=sys.stderr)
        raise SystemExit(EXIT_PREEMPTED) from None
    except NonFiniteError as err:
        print(f"jaxmt: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_NONFINITE) from None
    except (ConfigError, DataError, ModelError, MeshError, FileNotFoundError) as err:
        print(f"jaxmt: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
