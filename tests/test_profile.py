"""config.profile_steps: a jax.profiler trace of the chosen steps lands in WORKDIR/profile, in the layouts
TensorBoard's profiler (plugins/profile/RUN/*.xplane.pb) and Perfetto (perfetto_trace.json.gz) read."""

import gzip
import json

import pytest
from test_loop import toy_config, toy_program

from jaxmt.errors import ConfigError
from jaxmt.training import loop
from jaxmt.training.profiling import profile_window


def test_the_chosen_steps_are_traced_into_the_workdir(tmp_path):
    out = loop.run(toy_program(), toy_config(profile_steps=(3, 2)), str(tmp_path))
    assert out.start_step == 0 and len(out.history) == 8
    runs = list((tmp_path / "profile" / "plugins" / "profile").iterdir())
    assert len(runs) == 1
    assert list(runs[0].glob("*.xplane.pb")) and (runs[0] / "perfetto_trace.json.gz").exists()
    trace = json.loads(gzip.decompress((runs[0] / "perfetto_trace.json.gz").read_bytes()))
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "train" in names  # each traced step is annotated, for the profiler's step view


def test_no_trace_by_default_and_bad_windows_are_config_errors(tmp_path):
    loop.run(toy_program(), toy_config(num_steps=2), str(tmp_path))
    assert not (tmp_path / "profile").exists()
    assert profile_window(toy_config(profile_steps=(5, 3))) == (5, 3)
    for bad in [(0, 2), (3, -1), (1,), (1.5, 2)]:
        with pytest.raises(ConfigError, match=r"config.profile_steps = .*expected \(first step >= 1"):
            profile_window(toy_config(profile_steps=bad))
