"""The shared training loop (jaxmt.training.loop) on a toy program: resumption of any state tree,
save-and-stop on a signal only when checkpointing, one non-finite check per step, metrics.jsonl
without duplicate steps after a resume, and independent PRNG streams."""

import json
import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from jaxmt.core.rngs import STREAMS, stream_key
from jaxmt.core.state import TrainState, guarded_update
from jaxmt.gan.step import GanState
from jaxmt.training import loop
from jaxmt.training.faults import NonFiniteError, Preempted

TX = optax.sgd(0.1)


def toy_config(**overrides) -> ConfigDict:
    config = ConfigDict({"num_steps": 8, "log_every": 2, "eval_every": 4, "checkpoint_every": 4,
                         "keep_checkpoints": 2, "on_nonfinite": "stop", "seed": 0})
    config.update(overrides)
    return config


def toy_step(state: TrainState, x: jax.Array):
    loss, grads = jax.value_and_grad(lambda p: jnp.sum((p["w"] - x) ** 2))(state.params)
    new, metrics = guarded_update(state, grads, TX, loss)
    return new, {"loss": loss, **metrics}


def toy_program(bad_steps=(), **overrides) -> loop.Program:
    """w moves towards a step-dependent target; the targets of `bad_steps` are NaN."""
    init = lambda: TrainState.create({"w": jnp.zeros(3)}, TX)  # noqa: E731
    abstract = jax.eval_shape(init)
    sharding = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract)
    fields = dict(
        name="toy", abstract_state=abstract, state_sharding=sharding, init=init,
        batch=lambda step: jnp.full(3, jnp.nan if step in bad_steps else float(step)),
        step=jax.jit(toy_step), evaluate=lambda state: {"w0": float(state.params["w"][0])}, best_metric="w0")
    fields.update(overrides)
    return loop.Program(**fields)


def rows(workdir) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_fresh_run_logs_evaluates_saves_and_resuming_a_finished_run_trains_nothing(tmp_path):
    out = loop.run(toy_program(), toy_config(), str(tmp_path))
    assert out.start_step == 0 and [s for s, _ in out.history] == list(range(1, 9))
    assert out.logged_steps == [2, 4, 6, 8] and set(out.dev) == {"w0"} and out.best_dev["step"] == 8
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "8"]
    again = loop.run(toy_program(), toy_config(), str(tmp_path))
    assert again.start_step == 8 and again.history == [] and again.dev == {}
    chex.assert_trees_all_equal(again.state.params, out.state.params)


def test_any_state_tree_resumes_from_its_checkpoint(tmp_path):
    """What the GAN's two-state checkpoints relied on: a GanState restores at the saved step."""
    def gan_program():
        def init():
            return GanState(d=TrainState.create({"w": jnp.zeros(3)}, TX), g=TrainState.create({"w": jnp.ones(2)}, TX))

        def step(state, x):
            d, m = toy_step(state.d, x)
            return GanState(d=d, g=state.g), m

        return toy_program(init=init, abstract_state=jax.eval_shape(init),
                           state_sharding=jax.tree.map(lambda _: None, jax.eval_shape(init)), step=jax.jit(step),
                           evaluate=None, best_metric=None)

    full = loop.run(gan_program(), toy_config(), str(tmp_path / "full"))
    cut = loop.run(gan_program(), toy_config(num_steps=4), str(tmp_path / "cut"))
    assert os.listdir(tmp_path / "cut" / "checkpoints") == ["4"]
    resumed = loop.run(gan_program(), toy_config(), str(tmp_path / "cut"))
    assert resumed.start_step == 4 and cut.state.d.step == 4
    chex.assert_trees_all_equal(resumed.state, full.state)


def test_a_signal_saves_and_stops_only_a_checkpointing_run(tmp_path):
    def signalling(program):
        step = program.step

        def wrapped(state, batch):
            if int(state.step) == 2:  # as a scheduler would, between steps
                os.kill(os.getpid(), signal.SIGTERM)
            return step(state, batch)

        program.step = wrapped
        return program

    with pytest.raises(Preempted, match="SIGTERM at step 3"):
        loop.run(signalling(toy_program()), toy_config(), str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run" / "checkpoints") == ["3"]
    assert loop.run(toy_program(), toy_config(), str(tmp_path / "run")).start_step == 3
    # A run that keeps no checkpoints (a sweep's) installs no handler: the signal ends it as usual.
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *a: received.append(a[0]))
    try:
        out = loop.run(signalling(toy_program(checkpoints=False)), toy_config(), str(tmp_path / "sweep"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM] and out.start_step == 0 and len(out.history) == 8
    assert not (tmp_path / "sweep" / "checkpoints").exists()


def test_each_step_is_checked_for_faults_exactly_once(tmp_path, monkeypatch):
    checked = []
    real = loop.check_finite

    def counting(step, *args, **kwargs):
        checked.append(step)
        return real(step, *args, **kwargs)

    monkeypatch.setattr(loop, "check_finite", counting)
    out = loop.run(toy_program(bad_steps=(2, 5)), toy_config(on_nonfinite="skip"), str(tmp_path / "skip"))
    assert checked == list(range(1, 9)) and out.skipped_steps == [3, 6]
    # A skipped step keeps the params, but the step counter moves on.
    assert int(out.state.step) == 8
    checked.clear()
    with pytest.raises(NonFiniteError, match="step 6"):  # between logs, evals and saves: still caught
        loop.run(toy_program(bad_steps=(5,)), toy_config(log_every=0, eval_every=0, checkpoint_every=0),
                 str(tmp_path / "stop"))
    assert checked[:6] == [1, 2, 3, 4, 5, 6]


def test_metrics_never_hold_a_step_twice_after_a_resume(tmp_path):
    workdir = str(tmp_path)
    loop.run(toy_program(), toy_config(num_steps=6), workdir)  # checkpoints at 4 and 6; rows 2, 4, 6
    # As if killed after logging step 6 but before its checkpoint: only the step-4 checkpoint is left.
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "6")
    loop.run(toy_program(), toy_config(), workdir)  # resumes at 4, logs 6 and 8 again
    steps = [(r["step"], "dev/w0" in r) for r in rows(workdir)]
    assert len(steps) == len(set(steps)), steps
    assert sorted({s for s, _ in steps}) == [2, 4, 6, 8]


def test_prng_streams_are_distinct_and_fixed_by_the_seed():
    keys = {name: jax.random.key_data(stream_key(0, name)) for name in STREAMS}
    assert len({tuple(np.asarray(k).ravel()) for k in keys.values()}) == len(STREAMS)
    assert not np.array_equal(keys["init"], jax.random.key_data(jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(jax.random.key_data(stream_key(0, "pcgrad")), keys["pcgrad"])
    assert not np.array_equal(jax.random.key_data(stream_key(1, "pcgrad")), keys["pcgrad"])
