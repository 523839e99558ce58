"""The persistent XLA compilation cache of every jaxmt command (`config.compilation_cache`).

A restarted run (a preempted pod, a resumed workdir, a sweep's next run of the same shapes) loads its compiled
steps from the cache instead of compiling them again. `auto` (the default) is a folder of the user's cache
($XDG_CACHE_HOME/jaxmt/xla, else ~/.cache/jaxmt/xla); any other value a folder (an `etils.epath` path, so
gs://... on a pod); '' turns the cache off. JAX writes entries from process 0 only and keys them by the
program, the devices, the flags and the jax version, so one folder serves every run and machine that shares it.

The cache is JAX's own (`jax_compilation_cache_dir`); this module only chooses its folder and thresholds and
reports, at the end of the command, how much compiling it saved (from `jax.monitoring` events).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Iterator

import jax
from jax import monitoring

from jaxmt.paths import expand_path

log = logging.getLogger(__name__)

AUTO = "auto"
# JAX caches only programs that took at least this long to compile (its default, 1 s, suits a remote cache; a
# CPU run's train step of a small model compiles in about a second, and reading an entry from a local disk
# takes milliseconds, so jaxmt caches anything above a few eager ops' compile time).
MIN_COMPILE_SECONDS = 0.1

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # XLA compile, or the cache read that replaced it
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_WRITE_EVENT = "/jax/compilation_cache/cache_misses"  # recorded when an entry is written
_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"


def cache_dir(setting: str) -> str | None:
    """The cache folder `config.compilation_cache` names: `auto` the user's cache, '' none (off)."""
    if not setting:
        return None
    if setting == AUTO:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "jaxmt", "xla")
    return expand_path(setting, "config.compilation_cache")


@contextlib.contextmanager
def persistent_compilation_cache(setting: str) -> Iterator[dict[str, float]]:
    """Turns the cache on for the block (off for ''), and logs on leaving how long XLA compiled, how many
    programs the cache supplied and how many it took in. Yields the running totals (for tests)."""
    path = cache_dir(setting)
    totals: dict[str, float] = collections.defaultdict(float)

    def on_event(event: str, **kwargs) -> None:
        if event in (_HIT_EVENT, _WRITE_EVENT):
            totals[event] += 1

    def on_duration(event: str, seconds: float, **kwargs) -> None:
        if event in (_COMPILE_EVENT, _SAVED_EVENT):
            totals[event] += seconds
            totals[event + ":count"] += 1

    if path is not None:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield totals
    finally:
        monitoring.unregister_event_listener(on_event)
        monitoring.unregister_event_duration_listener(on_duration)
        if totals[_COMPILE_EVENT + ":count"] or totals[_HIT_EVENT]:  # silent when nothing compiled (a bad config)
            cache = (f"persistent compilation cache {path}: {int(totals[_HIT_EVENT])} hits "
                     f"({totals[_SAVED_EVENT]:.1f} s of compiling saved), {int(totals[_WRITE_EVENT])} programs "
                     "written" if path is not None else "persistent compilation cache off")
            log.info("XLA compile time %.2f s for %d programs; %s", totals[_COMPILE_EVENT],
                     int(totals[_COMPILE_EVENT + ":count"]), cache)


def off_for_cpu_processes() -> None:
    """Turns the cache off in a multi-process CPU run (call once the processes have joined, before compiling).

    There process 1 found none of the entries process 0 had written (JAX writes from process 0 only), so
    process 0 alone loaded its steps and ran ahead of the others, still compiling, by more than gloo's 30 s
    rendezvous for a new collective: the run failed (tests/test_multihost.py, resuming). On TPU and GPU the
    cache stays on, as JAX documents it for multi-host runs."""
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        jax.config.update("jax_enable_compilation_cache", False)
        log.info("persistent compilation cache off: %d CPU processes", jax.process_count())
