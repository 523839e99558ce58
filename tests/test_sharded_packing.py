"""Packed batches shard on the data axis: the compiled train step's collectives are over gradients only.

Run as a script in a subprocess with 8 emulated CPU devices, it compiles the packed multitask train step
(summed and PCGrad; cross, siamese and triplet pairs) over a data mesh at two global batch sizes and reads
the all-reduce / all-gather / reduce-scatter ops off the compiled HLO text. Examples live in their row
groups and every task's rows go through the encoder in one call, so the bytes those ops move are the
parameters' gradients (once for the summed loss, once a task for PCGrad) plus a few scalars, and do not
grow with the batch. (The pre-training and GAN steps do not pack: nothing of theirs is compiled here.)
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # as a script
from conftest import ROOT, demo_words, tiny_config  # noqa: E402

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1, "f64": 8, "s64": 8}
SETUPS = [(surgery, pair_mode) for surgery in ("none", "pcgrad") for pair_mode in ("cross", "siamese", "triplet")]
BATCH_SIZES = (16, 32)  # per task, global: 2 and 4 examples a device on 8 devices


def collective_bytes(hlo: str) -> dict[str, int]:
    """Bytes each kind of collective produces in a compiled HLO module's text (async starts counted once)."""
    out = dict.fromkeys(COLLECTIVES, 0)
    for line in hlo.splitlines():
        match = re.search(r"=\s*(.+?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
        if match is None:
            continue
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
            if dtype in DTYPE_BYTES:
                out[match.group(2)] += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return out


def compile_packed_steps(model_dir: str, setups=SETUPS) -> dict:
    """{'surgery/pair_mode/batch': collective bytes} and the params' bytes, from abstract compiles on 8 devices
    (each setup's bytes also printed to stderr as it is compiled)."""
    import jax
    import numpy as np

    from jaxmt.data.demo import demo_split
    from jaxmt.data.packing import train_step_batches
    from jaxmt.data.schema import DEFAULT_TASKS
    from jaxmt.models.pretrained import load_pretrained
    from jaxmt.parallel.mesh import data_parallel_size, make_mesh
    from jaxmt.training import setup
    from jaxmt.training.optimizer import make_optimizer
    from jaxmt.training.step import init_state, multitask_step_runner
    from jaxmt.training.trainer import make_sampler

    pretrained = load_pretrained(model_dir)
    specs = DEFAULT_TASKS
    report = {"devices": jax.device_count(), "bytes": {}}
    for surgery, pair_mode in setups:
        for batch_size in BATCH_SIZES:
            config = tiny_config(model_dir, **{"optim.gradient_surgery": surgery, "model.pair_mode": pair_mode,
                                               "mesh.shape": (8, 1, 1), "data.max_length": 32})
            for task in config.tasks.values():
                task.batch_size = batch_size
            mesh = make_mesh(config.mesh.axes, config.mesh.shape)
            model = setup.build_model(config, pretrained.config, specs)
            tx = make_optimizer(config, config.num_steps, len(specs))
            abstract = jax.eval_shape(lambda p, m=model, t=tx: init_state(m, t, jax.random.PRNGKey(0), p),
                                      pretrained.params)
            shardings = setup.state_shardings(abstract, mesh)
            runner = multitask_step_runner(config, mesh, model, tx, setup.loss_weights(config, specs), shardings)
            splits = setup.encode_splits(config, {t: demo_split(s, "train", 96) for t, s in specs.items()},
                                         pretrained.tokenizer)
            sampler = make_sampler(config, splits, data_parallel_size(mesh))
            batches = train_step_batches(splits, sampler, 0, config.data.buckets, pretrained.tokenizer.pad_token_id)
            state = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                           abstract, shardings)
            batches = jax.tree_util.tree_map(
                lambda v, s=runner.data_sharding: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), batches)
            hlo = runner.lower(state, batches, jax.random.PRNGKey(1)).compile().as_text()
            report["bytes"][f"{surgery}/{pair_mode}/{batch_size}"] = collective_bytes(hlo)
            print(surgery, pair_mode, batch_size, collective_bytes(hlo), file=sys.stderr, flush=True)
            report.setdefault("param_bytes", int(sum(np.prod(x.shape) * x.dtype.itemsize
                                                     for x in jax.tree_util.tree_leaves(abstract.params))))
    return report


@pytest.fixture(scope="module")
def eight_device_collectives(tmp_path_factory) -> dict:
    from jaxmt.models.pretrained import write_random_bert

    model_dir = write_random_bert(tmp_path_factory.mktemp("bert"), demo_words(), seed=0)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(model_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_collective_bytes_reads_hlo_ops():
    hlo = """
  %all-reduce.1 = f32[32,64]{1,0} all-reduce(f32[32,64]{1,0} %x), replica_groups={{0,1}}, to_apply=%add
  %all-reduce.2 = (f32[], bf16[8]{0}) all-reduce(f32[] %a, bf16[8]{0} %b), replica_groups={{0,1}}, to_apply=%add
  %ag = f32[16,4]{1,0} all-gather-start(f32[8,4]{1,0} %y), dimensions={0}
  %ag.done = f32[16,4]{1,0} all-gather-done(f32[16,4]{1,0} %ag)
  %dot = f32[32,32]{1,0} dot(f32[32,64]{1,0} %p, f32[64,32]{1,0} %q)"""
    got = collective_bytes(hlo)
    assert got["all-reduce"] == 32 * 64 * 4 + 4 + 16 and got["all-gather"] == 16 * 4 * 4
    assert got["reduce-scatter"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(("surgery", "pair_mode"), SETUPS)
def test_packed_step_collectives_are_gradients_only(eight_device_collectives, surgery, pair_mode):
    report = eight_device_collectives
    assert report["devices"] == 8
    small, large = (report["bytes"][f"{surgery}/{pair_mode}/{b}"] for b in BATCH_SIZES)
    # Nothing over activations: twice the batch moves the same bytes (activations would double).
    assert small == large
    assert small["all-gather"] == small["reduce-scatter"] == small["all-to-all"] == 0
    # Each parameter's gradient all-reduced once (PCGrad: once a task, less the other tasks' heads, which a task's
    # loss does not reach), plus scalars (losses, example counts).
    tasks = 1 if surgery == "none" else 3
    params = report["param_bytes"]
    assert (tasks - 0.1) * params <= small["all-reduce"] <= (tasks + 0.2) * params


if __name__ == "__main__":
    chosen = [tuple(a.split("/")) for a in sys.argv[2:]] or SETUPS  # e.g. none/cross pcgrad/cross
    print(json.dumps(compile_packed_steps(sys.argv[1], chosen)))
