"""Multi-process runs: `jax.distributed.initialize` from config flags, the environment, or the cluster.

Precedence: --config.parallel.coordinator_address / num_processes / process_id, then the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables, then JAX's
own cluster detection (Cloud TPU pods, SLURM, Open MPI), which needs none of them. With
`distributed='auto'` (the default) a run initializes only when one of those says there is more
than one process, so single-machine runs never wait for a coordinator.
"""

from __future__ import annotations

import logging
import os

import jax
from ml_collections import ConfigDict

from jaxmt.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


def _multi_host_cluster() -> str | None:
    """A multi-process TPU pod or SLURM job step, as JAX itself would detect it; None otherwise."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in os.environ:
        return "slurm"
    hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h]) > 1 or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    return None


def settings(parallel: ConfigDict) -> dict:
    """The explicit initialize() arguments: config flags first, then the environment."""
    def pick(value, env: str, unset, cast):
        if value != unset:
            return value
        return cast(os.environ[env]) if os.environ.get(env) else None

    return {
        "coordinator_address": pick(parallel.coordinator_address, "JAX_COORDINATOR_ADDRESS", "", str),
        "num_processes": pick(parallel.num_processes, "JAX_NUM_PROCESSES", 0, int),
        "process_id": pick(parallel.process_id, "JAX_PROCESS_ID", -1, int),
    }


def initialize(parallel: ConfigDict) -> bool:
    """Joins the run's processes (before any JAX computation); True when this is a multi-process run."""
    if parallel.distributed not in MODES:
        raise ConfigError(f"config.parallel.distributed = {parallel.distributed!r}; expected one of {MODES}")
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    args = {k: v for k, v in settings(parallel).items() if v is not None}
    cluster = _multi_host_cluster()
    wanted = parallel.distributed == "on" or (parallel.distributed == "auto" and (args or cluster))
    if not wanted:
        return False
    if args.get("coordinator_address") and ("num_processes" not in args or "process_id" not in args):
        raise ConfigError("a multi-process run with a coordinator address also needs num_processes and "
                          "process_id (--config.parallel.* or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
    # CPU processes exchange data through gloo (the TPU and GPU backends bring their own collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    log.info("jax.distributed.initialize(%s)%s", args, f" on a detected {cluster} cluster" if cluster else "")
    try:
        jax.distributed.initialize(**args)
    except RuntimeError as err:
        if "before any JAX" in str(err) or "backend" in str(err).lower():
            raise ConfigError("jax.distributed.initialize must run before any JAX computation in the process; "
                              f"call jaxmt.parallel.distributed.initialize first ({err})") from err
        raise
    except ValueError as err:  # JAX found no coordinator, process count or id to use
        raise ConfigError(f"config.parallel.distributed = {parallel.distributed!r} but {err} Set "
                          "--config.parallel.coordinator_address, num_processes and process_id (or the JAX_* "
                          "environment), or run under SLURM or on a TPU pod") from None
    log.info("process %d of %d, %d local of %d devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    from jaxmt.compilation_cache import off_for_cpu_processes

    off_for_cpu_processes()
    return jax.process_count() > 1
