"""On data and FSDP meshes the train steps keep activations batch-sharded: GSPMD gathers the sharded weights.

Without activation constraints the partitioner computed BERT's MLP over an FSDP mesh as tensor parallelism over
whole-batch activations (the compile report of BERT-base pre-training on a v5e-16 FSDP mesh: an all-reduce of
bf16[1024,128,3072] a layer, 35 GB of collective operands a step). `jaxmt.parallel.mesh.constrain_batch` on every
layer's input and output keeps the batch split; the embedding tables are gathered before their lookups
(`gather_weight`: GSPMD otherwise looked up each device's slice of the hidden size for the whole batch and
all-to-all'ed the result), and MLM's masked positions are gathered row by row (on either mesh). So the
collectives are the weights' gathers and the gradients' reductions, the same bytes at twice the batch. Run as a
script in a subprocess with 8 emulated CPU devices (the steps are `jaxmt.compile_report`'s programs: the
trainers' own jitted steps, compiled, not run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # as a script
from conftest import ROOT, demo_words, tiny_config  # noqa: E402
from test_pretraining import synthetic_corpus, tiny_pretrain_config  # noqa: E402
from test_sharded_packing import COLLECTIVES, collective_bytes  # noqa: E402

BATCH_SIZES = (16, 32)  # global: 2 and 4 examples a device on 8 devices
MESHES = {"data": (8, 1, 1), "fsdp": (1, 8, 1)}


def compile_steps(model_dir: str, workdir: str) -> dict:
    """{'workload/mesh/batch': collective bytes} for the pre-training and the packed fine-tuning step."""
    import jaxmt.compile_report as cr
    from jaxmt.parallel.mesh import make_mesh

    corpus = Path(workdir) / "corpus.txt"
    corpus.write_text(synthetic_corpus(8, 4))
    out = {}
    for mesh_name, shape in MESHES.items():
        for batch in BATCH_SIZES:
            pretrain = tiny_pretrain_config(model_dir, corpus, Path(workdir) / "cache", **{"mesh.shape": shape})
            pretrain.model.hidden_size, pretrain.model.intermediate_size, pretrain.batch_size = 64, 256, batch
            finetune = tiny_config(model_dir, **{"mesh.shape": shape, "data.max_length": 32})
            for task in finetune.tasks.values():
                task.batch_size = batch
            for name, config, build in (("pretrain", pretrain, cr.pretrain_program),
                                        ("finetune", finetune, cr.finetune_program)):
                program = build(config, make_mesh(config.mesh.axes, config.mesh.shape))
                hlo = program.runner.lower(*program.args).compile().as_text()
                out[f"{name}/{mesh_name}/{batch}"] = collective_bytes(hlo)
                print(name, mesh_name, batch, out[f"{name}/{mesh_name}/{batch}"], file=sys.stderr, flush=True)
    return out


@pytest.fixture(scope="module")
def eight_device_bytes(tmp_path_factory) -> dict:
    from jaxmt.models.pretrained import write_random_bert

    model_dir = write_random_bert(tmp_path_factory.mktemp("bert"), demo_words(), seed=0)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(model_dir), str(tmp_path_factory.mktemp("work"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["pretrain", "finetune"])
@pytest.mark.parametrize("mesh", MESHES)
def test_collectives_do_not_grow_with_the_batch(eight_device_bytes, workload, mesh):
    small, large = (eight_device_bytes[f"{workload}/{mesh}/{b}"] for b in BATCH_SIZES)
    for kind in COLLECTIVES:  # weights and gradients, not activations
        # FSDP was +83% to +99% (the MLP as tensor parallelism), then all-to-alls of the embedding lookups; both
        # meshes all-gathered and all-reduced MLM's masked positions for the whole batch, twice as large at twice
        # the batch. Now equal: only scalars may differ.
        assert large[kind] <= small[kind] + 1024, (kind, small, large)
    if mesh == "fsdp":  # FSDP's gathers and scatters of the weights
        data = eight_device_bytes[f"{workload}/data/{BATCH_SIZES[0]}"]
        assert small["all-gather"] + small["reduce-scatter"] > data["all-gather"] + data["reduce-scatter"]


if __name__ == "__main__":
    print(json.dumps(compile_steps(sys.argv[1], sys.argv[2])))
