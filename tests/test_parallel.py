"""Sharded training: the rules, their errors, and equal losses for every strategy on 8 emulated devices.

The in-process tests use abstract meshes (no devices needed). The equivalence test runs this file
as a script in a subprocess with 8 emulated CPU devices, training every strategy in one process
to pay JAX's start-up and the model load once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # as a script
from conftest import ROOT, demo_words, tiny_config  # noqa: E402

from jaxmt.errors import ConfigError  # noqa: E402
from jaxmt.parallel import distributed  # noqa: E402
from jaxmt.parallel.mesh import MeshError, batch_axes, mesh_shape  # noqa: E402
from jaxmt.parallel.pmap_step import check_pmap_mesh  # noqa: E402
from jaxmt.parallel.sharding_rules import ShardingError, check_heads, param_shardings, spec_for  # noqa: E402
from jaxmt.parallel.state_sharding import follow_params, stacked_shardings  # noqa: E402

LAYER = "backbone/encoder/bert/encoder/layer/0/"
MIX = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
TOLERANCE = dict(rel=2e-5, abs=2e-6)  # float32: only the order of the reductions differs between strategies


def test_rules_give_fsdp_and_megatron_specs():
    expect = {
        "backbone/encoder/bert/embeddings/word_embeddings/embedding": P(None, "fsdp"),
        LAYER + "attention/self/query/kernel": P("fsdp", "tensor"),
        LAYER + "attention/self/value/bias": P("tensor"),
        LAYER + "attention/output/dense/kernel": P("tensor", "fsdp"),
        LAYER + "attention/output/dense/bias": P(),
        LAYER + "intermediate/dense/kernel": P("fsdp", "tensor"),
        LAYER + "output/dense/kernel": P("tensor", "fsdp"),
        LAYER + "output/LayerNorm/scale": P(),
        "heads/sst/kernel": P(),
    }
    for name, spec in expect.items():
        shape = (8, 16) if "kernel" in name or "embedding" in name else (16,)
        assert spec_for(name, shape, MIX) == spec, name
    # Axes of size 1 or absent from the mesh drop out: one rule set serves every mesh.
    assert spec_for(LAYER + "intermediate/dense/kernel", (8, 16), AbstractMesh((8, 1, 1), MIX.axis_names)) == P()
    assert spec_for(LAYER + "intermediate/dense/kernel", (8, 16), AbstractMesh((4, 2), ("data", "tensor"))) == \
        P(None, "tensor")


def test_indivisible_dimension_names_the_param_and_axis():
    mesh = AbstractMesh((1, 1, 8), ("data", "fsdp", "tensor"))
    with pytest.raises(ShardingError, match=r"layer/0/intermediate/dense/kernel .*dimension 1 of size 36 .*'tensor' "
                                            r"of size 8"):
        param_shardings({"backbone": {"encoder": {"bert": {"encoder": {"layer": {"0": {"intermediate": {"dense": {
            "kernel": jax.ShapeDtypeStruct((32, 36), np.float32)}}}}}}}}}, mesh)
    with pytest.raises(ShardingError, match="12 attention heads.*'tensor' of size 8"):
        check_heads(12, mesh)
    with pytest.raises(MeshError, match=r"\(2, 2, 4\) .*does not fit 8 devices .*needs a multiple of 16"):
        mesh_shape(("data", "fsdp", "tensor"), (2, 2, 4), 8)
    with pytest.raises(MeshError, match="does not fit 8 devices .*uses 4"):
        mesh_shape(("data", "fsdp", "tensor"), (2, 2, 1), 8)
    assert mesh_shape(("data", "fsdp", "tensor"), (-1, 2, 2), 8) == (2, 2, 2)


def test_optimizer_state_follows_params_and_stacked_grads_keep_the_task_axis_whole():
    import optax

    params = {"backbone": {"encoder": {"bert": {"encoder": {"layer": {"0": {"attention": {"self": {"query": {
        "kernel": np.zeros((8, 8), np.float32), "bias": np.zeros((8,), np.float32)}}}}}}}}}}
    shardings = param_shardings(params, MIX)
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
    follows = follow_params(opt_state, params, shardings, MIX)
    kernel = shardings["backbone"]["encoder"]["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]
    for moment in (follows[0].mu, follows[0].nu):
        got = moment["backbone"]["encoder"]["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]
        assert got["kernel"].spec == kernel["kernel"].spec == P("fsdp", "tensor")
        assert got["bias"].spec == P("tensor")
    assert follows[0].count.spec == P()
    stacked = stacked_shardings(shardings)
    assert stacked["backbone"]["encoder"]["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"][
        "kernel"].spec == P(None, "fsdp", "tensor")


def test_batch_axes_and_pmap_mesh_check():
    assert batch_axes(MIX) == ("data", "fsdp")
    with pytest.raises(ConfigError, match="data parallelism only"):
        check_pmap_mesh(MIX)
    check_pmap_mesh(AbstractMesh((8, 1, 1), MIX.axis_names))


def test_distributed_settings_flags_over_environment(monkeypatch):
    from configs import default

    parallel = default.get_config().parallel
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS", "SLURM_STEP_NODELIST",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize(parallel) is False  # one process: nothing to join, nothing waited for
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    with parallel.unlocked():
        parallel.process_id = 1
    assert distributed.settings(parallel) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                              "process_id": 1}
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[01-02]")
    assert distributed._multi_host_cluster() == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1-w-0,t1-w-1,t1-w-2,t1-w-3")
    assert distributed._multi_host_cluster() == "tpu"
    with parallel.unlocked():
        parallel.distributed = "sometimes"
    with pytest.raises(ConfigError, match="parallel.distributed"):
        distributed.initialize(parallel)


# ---- 8 emulated devices, in a subprocess ------------------------------------------------------------------------

STRATEGIES = {  # name: (mesh shape over ('data', 'fsdp', 'tensor'), mode)
    "data": ((8, 1, 1), "jit"),
    "fsdp": ((1, 8, 1), "jit"),
    "tensor": ((1, 1, 8), "jit"),
    "mix": ((2, 2, 2), "jit"),
    "pmap": ((8, 1, 1), "pmap"),
}
RUNS = [(name, "none") for name in ("single", *STRATEGIES)] + [(name, "pcgrad") for name in ("single", "mix", "pmap")]
# Packed batches in 8 row groups (the single device holds all 8): pmap and the data mesh give its losses.
PACKED_RUNS = [("single+packed", "none"), ("data+packed", "none"), ("pmap+packed", "none"),
               ("single+packed", "pcgrad"), ("pmap+packed", "pcgrad")]
PACK_GROUPS = 8
STEPS = 5


def run_strategies(model_dir: str) -> dict:
    """Trains STEPS steps per strategy and surgery mode; losses, and the param shardings the step produced."""
    from jaxmt.data.demo import demo_split
    from jaxmt.data.packing import train_step_batches
    from jaxmt.data.sampling import TaskSampler
    from jaxmt.data.schema import DEFAULT_TASKS
    from jaxmt.models.pretrained import load_pretrained
    from jaxmt.parallel.host_data import put_global
    from jaxmt.parallel.mesh import make_mesh
    from jaxmt.parallel.sharding_rules import path_name
    from jaxmt.parallel.state_sharding import encoder_shardings
    from jaxmt.training import setup
    from jaxmt.training.optimizer import make_optimizer
    from jaxmt.training.step import init_state, multitask_step_runner
    from jaxmt.training.trainer import make_sampler

    pretrained = load_pretrained(model_dir)
    specs = DEFAULT_TASKS
    report = {"devices": jax.device_count(), "runs": {}}
    for name, surgery in RUNS + PACKED_RUNS:
        start = time.time()
        strategy, packed = name.split("+")[0], name.endswith("+packed")
        shape, mode = {"single": ((1, 1, 1), "jit"), **STRATEGIES}[strategy]
        config = tiny_config(model_dir, **{"optim.gradient_surgery": surgery, "optim.learning_rate": 1e-3,
                                           "optim.warmup_fraction": 0.0, "model.dropout": 0.0,
                                           "parallel.mode": mode, "mesh.shape": shape,
                                           "data.buckets": (32,), "data.max_length": 32})
        for task in config.tasks.values():
            task.batch_size = 16
        devices = jax.devices()[:1] if strategy == "single" else jax.devices()
        mesh = make_mesh(config.mesh.axes, config.mesh.shape, devices)
        setup.check_batches_fit(config, mesh)
        model = setup.build_model(config, pretrained.config, specs)
        tx = make_optimizer(config, STEPS, len(specs))
        abstract = jax.eval_shape(lambda p, m=model, t=tx: init_state(m, t, jax.random.PRNGKey(0), p),
                                  pretrained.params)
        shardings = setup.state_shardings(abstract, mesh)
        runner = multitask_step_runner(config, mesh, model, tx, setup.loss_weights(config, specs), shardings)
        init = jax.jit(lambda p, m=model, t=tx: init_state(m, t, jax.random.PRNGKey(0), p), out_shardings=shardings)
        state = init(put_global(pretrained.params, encoder_shardings(pretrained.params, mesh)))
        splits = setup.encode_splits(config, {t: demo_split(s, "train", 64) for t, s in specs.items()},
                                     pretrained.tokenizer)
        sampler = TaskSampler({t: 64 for t in specs}, {t: 16 for t in specs}, "all", 0, STEPS)
        if packed:
            sampler = make_sampler(config, splits, PACK_GROUPS)
        losses = []
        for step in range(STEPS):
            batches = runner.put_host(train_step_batches(splits, sampler, step, config.data.buckets,
                                                         pretrained.tokenizer.pad_token_id))
            state, metrics = runner.step(state, batches, jax.random.PRNGKey(1))
            losses.append({k: float(v) for k, v in metrics.items() if k.startswith("loss/")})
        flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
        run = {"losses": losses, "specs": {}, "shard_shapes": {}, "expected_specs": {}}
        expected = jax.tree_util.tree_leaves(shardings.params)
        for (path, leaf), want in zip(flat, expected):
            key = path_name(path)
            run["specs"][key] = str(leaf.sharding.spec)
            run["expected_specs"][key] = str(want.spec)
            run["shard_shapes"][key] = [list(leaf.shape), list(leaf.addressable_shards[0].data.shape)]
        moments = [x for x in jax.tree_util.tree_leaves(state.opt_state) if x.ndim == 2]
        run["opt_state_sharded"] = sorted({str(x.sharding.spec) for x in moments})
        if mode == "jit" and strategy != "single" and not packed:
            executable = runner.lower(state, batches, jax.random.PRNGKey(1)).compile()
            compiled = jax.tree_util.tree_leaves(executable.input_shardings[0][0].params)
            run["compiled_specs"] = [str(c.spec) for c in compiled]
        report["runs"][f"{name}/{surgery}"] = run
        print(f"{name}/{surgery}: {time.time() - start:.1f}s", file=sys.stderr)
    return report


@pytest.fixture(scope="module")
def eight_device_report(tmp_path_factory) -> dict:
    from jaxmt.models.pretrained import write_random_bert

    # 8 heads, so 'tensor' = 8 splits whole heads; hidden 32 and MLP 64 split over 8 too. No dropout inside BERT:
    # pmap draws each device's masks for its own rows, so only dropout-free losses can match the other paths.
    model_dir = write_random_bert(tmp_path_factory.mktemp("bert8"), demo_words(), seed=0, num_attention_heads=8,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(model_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_losses(report: dict, run: str, single_run: str) -> None:
    """`run`'s losses step by step equal `single_run`'s, which train (so equal losses mean something)."""
    single, got = report["runs"][single_run]["losses"], report["runs"][run]["losses"]
    assert len(got) == len(single) == STEPS
    for step, (a, b) in enumerate(zip(got, single)):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], **TOLERANCE), (run, step, key)
    assert single[-1]["loss/total"] < single[0]["loss/total"]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "surgery"), [r for r in RUNS if r[0] != "single"])
def test_every_strategy_gives_the_single_device_losses(eight_device_report, strategy, surgery):
    assert eight_device_report["devices"] == 8
    assert_same_losses(eight_device_report, f"{strategy}/{surgery}", f"single/{surgery}")


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "surgery"), [r for r in PACKED_RUNS if not r[0].startswith("single")])
def test_packed_batches_give_the_single_device_losses_on_the_data_mesh_and_pmap(eight_device_report, strategy,
                                                                                surgery):
    assert_same_losses(eight_device_report, f"{strategy}/{surgery}", f"single+packed/{surgery}")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "tensor", "mix"])
def test_compiled_step_shards_params_as_the_rules_ask(eight_device_report, strategy):
    run = eight_device_report["runs"][f"{strategy}/none"]
    assert run["specs"] == run["expected_specs"]
    assert run["compiled_specs"] == list(run["expected_specs"].values())
    query = "backbone/encoder/bert/encoder/layer/0/attention/self/query/kernel"
    mlp_out = "backbone/encoder/bert/encoder/layer/1/output/dense/kernel"
    words = "backbone/encoder/bert/embeddings/word_embeddings/embedding"
    shard = {"fsdp": {query: [4, 32], mlp_out: [64, 4], words: [None, 4]},
             "tensor": {query: [32, 4], mlp_out: [8, 32], words: [None, 32]},
             "mix": {query: [16, 16], mlp_out: [32, 16], words: [None, 16]}}[strategy]
    for name, want in shard.items():
        full, local = run["shard_shapes"][name]
        assert [w if w is not None else f for w, f in zip(want, full)] == local, (name, full, local)
    assert run["specs"]["heads/sst/kernel"] == str(P())
    assert any("fsdp" in s or "tensor" in s for s in run["opt_state_sharded"])  # Adam moments sharded too


@pytest.mark.slow
def test_data_parallel_and_pmap_keep_params_replicated(eight_device_report):
    for name in ("data/none", "pmap/pcgrad"):
        run = eight_device_report["runs"][name]
        assert set(run["specs"].values()) == {str(P())}
        assert all(full == local for full, local in run["shard_shapes"].values())


if __name__ == "__main__":
    print(json.dumps(run_strategies(sys.argv[1])))
