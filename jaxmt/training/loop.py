"""The one training loop of jaxmt: every trainer (multitask fine-tuning, pre-training, QA, AC-GAN-BERT and
its baseline) runs through `run`, and supplies only what differs in a `Program`: its state, batches, step
and evaluation.

The loop owns what they share: restore-or-init from the latest checkpoint, the progress bar, the
non-finite check of each step (one step behind, so one step stays in flight), metrics read back to the
host only at log steps, evaluation and the best checkpoint, save-or-stop on SIGTERM/SIGINT with every
process agreeing on the step, metrics.jsonl without duplicate steps after a resume, and results.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np
from etils import epath
from ml_collections import ConfigDict
from tqdm import tqdm

from jaxmt.checkpointing.manager import Checkpoints
from jaxmt.checkpointing.workdir import RESULTS_FILE, check_resume_config, has_trained, write_json, write_run_config
from jaxmt.config_checks import check_ranges
from jaxmt.data.prefetch import Prefetcher, prefetch_depth
from jaxmt.training.faults import PreemptionGuard, StopVote, check_finite, save_or_stop
from jaxmt.training.metric_writers import MetricWriter
from jaxmt.training.profiling import StepProfiler, profile_window

log = logging.getLogger(__name__)

Metrics = dict[str, Any]


@dataclasses.dataclass
class Program:
    """What one trainer brings to the loop.

    `init()` builds the step-0 state (called only when the workdir has no checkpoint); `batch(step)` the
    device batch of a step (a pure function of the step, so a resumed run sees the same data);
    `step(state, batch)` runs the jitted step and returns (state, metrics) with a boolean 'nonfinite';
    `evaluate(state)` returns dev metrics (floats), logged as `<eval_prefix>/<name>` (also at step 0 of a
    fresh run when `evaluate_first`); `best_metric` names the one to maximise for the best checkpoint,
    whose params `best_params(state)` picks.
    """

    name: str  # the progress bar's label
    abstract_state: Any
    state_sharding: Any
    init: Callable[[], Any]
    batch: Callable[[int], Any]
    step: Callable[[Any, Any], tuple[Any, Metrics]]
    evaluate: Callable[[Any], dict[str, float]] | None = None
    eval_prefix: str = "dev"
    evaluate_first: bool = False
    best_metric: str | None = None
    best_params: Callable[[Any], Any] = lambda state: state.params
    extra_scalars: Callable[[Any], dict[str, float]] = lambda state: {}  # read at log steps (e.g. PCGrad's)
    describe_fault: Callable[[dict], str] = lambda flags: ""  # names what was not finite
    fault_hint: str = "Lower the learning rate, check the data, or set --config.on_nonfinite=skip"
    shape_key: Callable[[Any], Hashable] | None = None  # counts compiles: one per distinct batch layout
    tag: str = ""  # prefixed to printed lines (the demo-data banner)
    checkpoints: bool = True  # a sweep's runs keep results only


@dataclasses.dataclass
class Outcome:
    """What the loop measured; the trainer turns it into its results."""

    state: Any
    start_step: int
    initial_dev: dict[str, float]
    dev: dict[str, float]
    best_dev: dict[str, float]
    history: list[tuple[int, dict[str, float]]]  # every step's scalars, read back at log steps
    logged_steps: list[int]
    skipped_steps: list[int]
    compiles: int
    train_seconds: float
    step_seconds: list[float]
    input_wait_seconds: list[float] = dataclasses.field(default_factory=list)  # the loop's wait for each batch

    def values(self, key: str, logged_only: bool = False) -> list[float]:
        """One metric over the steps this run trained (or only those logged)."""
        steps = set(self.logged_steps) if logged_only else None
        return [m[key] for s, m in self.history if key in m and (steps is None or s in steps)]

    def common_results(self, config: ConfigDict) -> dict:
        seconds = self.step_seconds[1:]  # the first step compiles
        return {
            "steps": config.num_steps,
            "resumed_from_step": self.start_step,
            "train_seconds": round(self.train_seconds, 1),
            "seconds_per_step": round(float(np.median(seconds)), 4) if seconds else None,
            "input_wait_ms_per_step": round(1e3 * float(np.median(self.input_wait_seconds[1:])), 3)
            if len(self.input_wait_seconds) > 1 else None,  # median; the first step's batch has no head start
            "skipped_nonfinite_steps": self.skipped_steps,
            "train_step_compiles": self.compiles,
            "devices": jax.device_count(),
            "dev": self.dev,
            "best_dev": self.best_dev,
        }


def _due(done: int, every: int, num_steps: int) -> bool:
    return done == num_steps or bool(every and done % every == 0)


def _scalars(metrics: Metrics) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items() if not k.startswith("nonfinite")}


def _read_back(unread: list[tuple[int, Metrics]]) -> list[tuple[int, dict[str, float]]]:
    """The scalars of steps whose metrics are still on the device, fetched in one transfer."""
    fetched = jax.device_get([m for _, m in unread])
    return [(s, _scalars(m)) for (s, _), m in zip(unread, fetched)]


def prepare_workdir(config: ConfigDict, workdir: str) -> None:
    """Checks the config's ranges and that it matches the one the workdir was trained with, then records it.

    Only a workdir that holds training (a checkpoint or results) binds the config: one whose earlier start
    failed while loading (a bad data path, a bad row, a mesh error) left only its config.json, and the
    corrected start replaces it, as nothing was trained with it."""
    check_ranges(config)
    profile_window(config)
    trained = has_trained(workdir)
    if trained:
        check_resume_config(workdir, config, allow_changes=bool(config.get("allow_config_change", False)))
    if jax.process_index() == 0:
        write_run_config(workdir, config, replace=not trained)


def run(program: Program, config: ConfigDict, workdir: str) -> Outcome:
    """Trains `program` from the workdir's latest checkpoint (or `init()`) to `config.num_steps`."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints) if program.checkpoints else None
    if checkpoints is not None:
        state, start = checkpoints.restore_or_init(program.abstract_state, program.state_sharding, program.init)
        best = checkpoints.best_score()
    else:
        state, start, best = program.init(), 0, None
    num_steps = config.num_steps
    writer = MetricWriter(workdir, resume_step=start if start > 0 else -1)
    vote = StopVote()
    initial: dict[str, float] = {}
    if program.evaluate_first and program.evaluate is not None and start == 0:
        initial = program.evaluate(state)
        writer.write(0, {f"{program.eval_prefix}/{k}": v for k, v in initial.items()})
    dev: dict[str, float] = {}
    best_dev: dict[str, float] = {}
    history: list[tuple[int, dict[str, float]]] = []
    logged: list[int] = []
    skipped: list[int] = []
    unread: list[tuple[int, Metrics]] = []  # steps whose metrics are still on the device
    layouts: set = set()
    step_seconds: list[float] = []
    pending = None  # (step, metrics) whose fault flags are still to be read, one step behind

    def check(done: int, metrics: Metrics) -> None:
        flags = jax.device_get({k: v for k, v in metrics.items() if k.startswith("nonfinite")})
        check_finite(done, flags["nonfinite"], config.on_nonfinite, skipped, program.describe_fault(flags),
                     program.fault_hint)

    bar = tqdm(range(start, num_steps), initial=start, total=num_steps, desc=f"{program.tag}{program.name}",
               disable=jax.process_index() != 0, dynamic_ncols=True)
    start_time = tick = time.time()
    # Without checkpoints (a sweep's runs) there is nothing to resume from: a signal ends the run as usual.
    guard = PreemptionGuard() if checkpoints is not None else None
    profiler = StepProfiler(config, workdir)  # config.profile_steps: a trace of those steps
    try:
        # Batches are built data.prefetch steps ahead on a thread (jaxmt.data.prefetch), stopped on leaving.
        with guard or contextlib.nullcontext(), Prefetcher(program.batch, range(start, num_steps),
                                                           prefetch_depth(config)) as batches:
            for step in bar:
                profiler.begin(step + 1)
                batch = batches.get(step)
                if program.shape_key is not None:
                    key = program.shape_key(batch)
                    if key not in layouts:
                        layouts.add(key)
                        log.info("compiling the %s step for %s (compile #%d)", program.name, key, len(layouts))
                state, metrics = program.step(state, batch)
                profiler.end(step + 1, state)
                done = step + 1
                stop = vote.poll(guard.received if guard else None)  # the same step on every process
                if pending is not None:
                    check(*pending)
                pending = (done, metrics)
                unread.append((done, metrics))
                log_due = _due(done, config.log_every, num_steps)
                eval_due = program.evaluate is not None and _due(done, config.eval_every, num_steps)
                save_due = checkpoints is not None and _due(done, config.checkpoint_every, num_steps)
                if log_due or eval_due or save_due or stop:  # these wait for the step anyway
                    check(*pending)
                    pending = None
                if log_due:
                    history.extend(_read_back(unread))
                    unread.clear()
                    scalars = {f"train/{k}": v for k, v in history[-1][1].items()}
                    scalars.update({f"train/{k}": v for k, v in program.extra_scalars(state).items()})
                    if program.shape_key is not None:
                        scalars["train/compiles"] = len(layouts)
                    scalars["train/skipped_steps"] = len(skipped)
                    writer.write(done, scalars)
                    logged.append(done)
                    bar.set_postfix({k.rsplit("/", 1)[-1] if k.count("/") == 1 else k.split("/", 2)[-1]: f"{v:.3f}"
                                     for k, v in scalars.items() if "loss" in k and k.count("/") <= 2})
                if eval_due:
                    dev = program.evaluate(state)
                    writer.write(done, {f"{program.eval_prefix}/{k}": v for k, v in dev.items()})
                    summary = "  ".join(f"{k} {v:.4f}" for k, v in dev.items())
                    bar.write(f"{program.tag}step {done}: {program.eval_prefix} {summary}")
                    score = dev.get(program.best_metric) if program.best_metric else None
                    if score is not None and (best is None or score > best):
                        best, best_dev = score, dict(dev, step=done)
                        if checkpoints is not None:
                            checkpoints.save_best(done, program.best_params(state), best, dev)
                if checkpoints is not None:
                    save_or_stop(checkpoints, done, state, save_due, stop, workdir)
                now = time.time()
                step_seconds.append(now - tick)
                tick = now
            if pending is not None:
                check(*pending)
    finally:
        bar.close()
        profiler.close()
        if checkpoints is not None:
            checkpoints.wait()
            checkpoints.close()
        writer.close()
    history.extend(_read_back(unread))
    return Outcome(state=state, start_step=start, initial_dev=initial, dev=dev, best_dev=best_dev,
                   history=history, logged_steps=logged, skipped_steps=skipped, compiles=len(layouts),
                   train_seconds=time.time() - start_time, step_seconds=step_seconds,
                   input_wait_seconds=batches.wait_seconds)


def write_results(workdir: str, results: dict) -> None:
    """results.json, from process 0 only, written atomically."""
    if jax.process_index() == 0:
        write_json(epath.Path(workdir) / RESULTS_FILE, results)
