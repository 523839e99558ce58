"""Batches built ahead on a thread (jaxmt.data.prefetch) and the loop running on them: the same batches in the
same order, a bounded queue, build errors raised in the loop's thread, no thread left behind, and the loop's
resume, fault and signal behaviour unchanged with prefetch on."""

import os
import signal
import threading
import time

import chex
import numpy as np
import pytest
from ml_collections import ConfigDict
from test_loop import toy_config, toy_program

from jaxmt.data.errors import DataError
from jaxmt.data.prefetch import Prefetcher, prefetch_depth
from jaxmt.training import loop
from jaxmt.training.faults import NonFiniteError, Preempted


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jaxmt-prefetch"]


def recording(fail_at: int | None = None):
    calls = []

    def batch(step: int) -> np.ndarray:
        calls.append(step)
        if step == fail_at:
            raise DataError(f"bad row for step {step}")
        return np.full(2, step)

    return batch, calls


def settle(calls: list, seconds: float = 0.3) -> None:
    """Waits until the producer has stopped calling (it is blocked on the full queue)."""
    seen = -1
    while seen != len(calls):
        seen = len(calls)
        time.sleep(seconds)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_batches_come_in_order_and_at_most_depth_ahead(depth):
    batch, calls = recording()
    with Prefetcher(batch, range(3, 12), depth) as ahead:
        for step in range(3, 7):
            np.testing.assert_array_equal(ahead.get(step), np.full(2, step))
        settle(calls)
        # Built: the 4 handed out, `depth` in the queue and one held by the blocked producer.
        assert calls == list(range(3, 7 + (depth + 1 if depth else 0)))
        assert len(ahead.wait_seconds) == 4
    assert not prefetch_threads()


def test_a_build_error_is_raised_by_the_step_that_asks_for_it_and_the_thread_ends():
    batch, calls = recording(fail_at=5)
    with pytest.raises(DataError, match="^bad row for step 5$"), Prefetcher(batch, range(10), 2) as ahead:
        for step in range(10):
            ahead.get(step)
    assert calls == list(range(6)) and not prefetch_threads()


def test_close_stops_a_producer_blocked_on_the_full_queue_and_asking_out_of_order_is_an_error():
    batch, calls = recording()
    ahead = Prefetcher(batch, range(100), 1)
    settle(calls)
    assert prefetch_threads()
    with pytest.raises(ValueError, match="asked for step 1, the next is 0"):
        ahead.get(1)
    ahead.close()
    assert not prefetch_threads() and len(calls) == 2
    with pytest.raises(ValueError, match="prefetch depth must be >= 0"):
        Prefetcher(batch, range(3), -1)


def test_depth_comes_from_data_prefetch_and_is_off_without_a_data_block():
    assert prefetch_depth(toy_config()) == 0
    assert prefetch_depth(toy_config(data=ConfigDict({"prefetch": 3}))) == 3


def prefetching(**overrides) -> ConfigDict:
    return toy_config(data=ConfigDict({"prefetch": 2}), **overrides)


def test_the_loop_with_prefetch_trains_the_same_and_resumes_bit_identically(tmp_path):
    plain = loop.run(toy_program(), toy_config(), str(tmp_path / "plain"))
    ahead = loop.run(toy_program(), prefetching(), str(tmp_path / "ahead"))
    chex.assert_trees_all_equal(ahead.state.params, plain.state.params)
    assert ahead.history == plain.history and len(ahead.input_wait_seconds) == 8
    cut = str(tmp_path / "cut")
    loop.run(toy_program(), prefetching(num_steps=4), cut)
    resumed = loop.run(toy_program(), prefetching(allow_config_change=True), cut)
    assert resumed.start_step == 4 and len(resumed.input_wait_seconds) == 4
    chex.assert_trees_all_equal(resumed.state.params, plain.state.params)
    assert not prefetch_threads()


def test_the_loop_with_prefetch_stops_on_a_build_error_a_fault_and_a_signal_as_without(tmp_path):
    def failing(step):
        if step == 5:
            raise DataError("bad.csv line 7: field 'label' is empty")
        return np.full(3, float(step), np.float32)

    with pytest.raises(DataError, match="^bad.csv line 7: field 'label' is empty$"):
        loop.run(toy_program(batch=failing), prefetching(), str(tmp_path / "error"))
    assert os.listdir(tmp_path / "error" / "checkpoints") == ["4"] and not prefetch_threads()

    with pytest.raises(NonFiniteError, match="step 6"):
        loop.run(toy_program(bad_steps=(5,)), prefetching(log_every=0, eval_every=0, checkpoint_every=0),
                 str(tmp_path / "fault"))
    assert not prefetch_threads()

    program = toy_program()
    step = program.step

    def signalling(state, batch):
        if int(state.step) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(state, batch)

    program.step = signalling
    with pytest.raises(Preempted, match="SIGTERM at step 3"):
        loop.run(program, prefetching(), str(tmp_path / "signal"))
    assert os.listdir(tmp_path / "signal" / "checkpoints") == ["3"] and not prefetch_threads()
