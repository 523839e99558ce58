"""On an FSDP mesh the train steps keep activations batch-sharded: GSPMD gathers the sharded weights.

Without activation constraints the partitioner computed BERT's MLP over an FSDP mesh as tensor parallelism over
whole-batch activations (the compile report of BERT-base pre-training on a v5e-16 FSDP mesh: an all-reduce of
bf16[1024,128,3072] a layer, 35 GB of collective operands a step). `jaxmt.parallel.mesh.constrain_batch` on every
layer's input and output keeps the batch split, so the collectives are the weights' gathers and the gradients'
reductions, nearly the same bytes at twice the batch. Run as a script in a subprocess with 8 emulated CPU devices
(the steps are `jaxmt.compile_report`'s programs: the trainers' own jitted steps, compiled, not run).
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
from test_sharded_packing import collective_bytes  # noqa: E402

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
def test_fsdp_collectives_do_not_grow_with_the_batch(eight_device_bytes, workload):
    small, large = (eight_device_bytes[f"{workload}/fsdp/{b}"] for b in BATCH_SIZES)
    for kind in ("all-reduce", "all-gather", "reduce-scatter"):  # weights and gradients, not activations
        assert large[kind] <= 1.05 * small[kind] + 64 * 1024, (kind, small, large)  # was +83% to +99%
    data = eight_device_bytes[f"{workload}/data/{BATCH_SIZES[0]}"]
    assert small["all-gather"] + small["reduce-scatter"] > data["all-gather"] + data["reduce-scatter"]  # FSDP's


if __name__ == "__main__":
    print(json.dumps(compile_steps(sys.argv[1], sys.argv[2])))
