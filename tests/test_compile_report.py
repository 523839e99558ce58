"""jaxmt.compile_report: the HLO collective parser, the batch search, and real AOT compiles of tiny configs for small
TPU topologies (skipped where libtpu, the `tpu` extra, is not installed)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest
from conftest import ROOT, tiny_config, with_overrides
from test_pretraining import bert_dir, synthetic_corpus, tiny_pretrain_config  # noqa: F401 (fixture)

from jaxmt import compile_report as cr
from jaxmt.errors import ConfigError

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another process of the suite may hold libtpu's lock
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]'): no TPU topology to "
                                         "compile for")

HLO = """\
HloModule jit_train_step, entry_computation_layout={(f32[768,3072]{1,0})->f32[]}

ENTRY %main.1 (p0: f32[768,3072], p1: bf16[4,128]) -> f32[] {
  %p0 = f32[768,3072]{1,0:T(8,128)} parameter(0)
  %p1 = bf16[4,128]{1,0} parameter(1)
  %fusion.3 = f32[192,3072]{1,0} fusion(%p0), kind=kLoop, calls=%fused
  %all-gather-start = (f32[192,3072]{1,0}, f32[768,3072]{1,0}) all-gather-start(%fusion.3), channel_id=2, \
replica_groups=[1,4]<=[4], dimensions={0}, metadata={op_name="jit(train_step)/all_gather"}
  %all-gather-done = f32[768,3072]{1,0} all-gather-done(%all-gather-start)
  %all-reduce.1 = (f32[768,3072]{1,0}, bf16[4,128]{1,0}) all-reduce(%p0, %p1), channel_id=1, \
replica_groups=mesh['axis_0'=4] {'axis_0'}, to_apply=%add
  ROOT %reduce-scatter = f32[192,3072]{1,0} reduce-scatter(%p0), channel_id=3, replica_groups={{0,1,2,3}}, \
dimensions={0}, to_apply=%add
}
"""


def test_collectives_take_operand_sizes_from_the_operands_definitions():
    found = cr.collectives(HLO)
    assert [c["kind"] for c in found] == ["all-gather", "all-reduce", "reduce-scatter"]  # '-done' not counted
    gather, reduce, scatter = found
    assert gather["operand_bytes"] == 192 * 3072 * 4  # the shard gathered, not the gathered result
    assert reduce["operand_bytes"] == 768 * 3072 * 4 + 4 * 128 * 2  # both operands, bf16 at 2 bytes
    assert scatter["operand_bytes"] == 768 * 3072 * 4 and scatter["result"] == "f32[192,3072]"
    assert gather["op_name"] == "jit(train_step)/all_gather" and gather["replica_groups"] == "[1,4]<=[4]"
    assert reduce["replica_groups"].startswith("mesh[")


def test_while_loops_are_counted_by_op_with_layers_folded():
    """A windowed einsum's loop (what XLA's TPU compiler makes of an FSDP weight gradient and its reduce-scatter):
    the report counts it, because the cost analysis counts the loop's body once."""
    body = "(bf16[8,4]{{1,0}}, u32[]) while(%tuple.{i}), condition=%cond.{i}, body=%body.{i}"
    layer = 'metadata={{op_name="jit(train_step)/transpose(jvp(Bert))/encoder.run_layer/{i}/output/dense/dot_general"}}'
    text = "\n".join([HLO.rsplit("}", 1)[0]]
                     + [f"  %while.{i} = {body.format(i=i)}, {layer.format(i=i)}" for i in (0, 1)]
                     + [f"  %while.7 = {body.format(i=7)}", "}"])
    assert cr.while_loops(text) == {
        "jit(train_step)/transpose(jvp(Bert))/encoder.run_layer/*/output/dense/dot_general": 2, "while.7": 1}
    assert cr.while_loops(HLO) == {}


def test_search_finds_the_largest_power_of_two_that_fits(monkeypatch):
    hbm = cr.CHIPS["v5e"].hbm_bytes
    fixed, per_example = 3 * cr.GIB, 0.3 * cr.GIB  # fits up to 43 examples: the answer is 32
    compiled = []

    def fake_compile(config, topology, devices, dump_to=""):
        per_device = config.batch_size  # one device: the global batch
        compiled.append(per_device)
        total = int(fixed + per_example * per_device)
        out = {"fits": total <= hbm, "compile_seconds": 1.0, "per_device_batch": per_device,
               "memory_per_device": {"total_bytes": total, "total_gib": total / cr.GIB}}
        return out if out["fits"] else {**out, "compiler_error": f"Ran out of memory: {total} bytes"}

    monkeypatch.setattr(cr, "compile_once", fake_compile)
    from configs import pretrain_bert

    config = pretrain_bert.get_config()
    best, reports = cr.search_per_device_batch(config, "v5e:2x2", jax.devices()[:1], start=4, log=lambda m, r: None)
    assert best == 32 and reports[32]["fits"] and not reports[64]["fits"]
    assert compiled == [4, 8, 16, 32, 64]  # up by doubles from a start that fits, to the first that does not
    compiled.clear()
    best, _ = cr.search_per_device_batch(config, "v5e:2x2", jax.devices()[:1], start=128, log=lambda m, r: None)
    assert best == 32 and compiled == [128, 64, 32]  # down by halves from a start that does not fit
    compiled.clear()
    best, _ = cr.search_per_device_batch(config, "v5e:2x2", jax.devices()[:1], start=64, log=lambda m, r: None)
    assert best == 32 and compiled == [64, 32]  # a start one power above the answer: one compile that fits
    partial = cr.search_report({k: v for k, v in reports.items() if k <= 8}, None, finished=False)  # as saved
    assert partial["largest_per_device_batch"] is None  # not known yet; the largest fitting so far is shown
    assert not partial["search_finished"] and cr.search_report(reports, 32)["search_finished"]
    search = cr.search_report(reports, 32)["search"]  # an out-of-memory verdict keeps the compiler's line
    assert search["64"]["compiler_error"].startswith("Ran out of memory") and "compiler_error" not in search["32"]
    assert partial["memory_per_device"] == reports[8]["memory_per_device"]
    assert set(partial["search"]) == {"4", "8"} and cr.search_report(reports, 32)["largest_per_device_batch"] == 32

    # A search cut short goes on from its saved record: what it compiled is not compiled again, the result is the
    # uninterrupted search's.
    saved = json.loads(json.dumps(cr.search_report({k: v for k, v in reports.items() if k <= 16}, None, False)))
    compiled.clear()
    best, resumed = cr.search_per_device_batch(config, "v5e:2x2", jax.devices()[:1], start=4, log=lambda m, r: None,
                                               known=cr.reports_of_search(saved))
    assert best == 32 and compiled == [32, 64]
    assert cr.search_report(resumed, 32)["search"] == json.loads(json.dumps(cr.search_report(reports, 32)["search"]))
    down = json.loads(json.dumps(cr.search_report({k: v for k, v in reports.items() if k in (32, 64)}, None, False)))
    compiled.clear()  # cut short after 32 fitted and 64 did not: nothing left to compile, 32's whole report kept
    best, resumed = cr.search_per_device_batch(config, "v5e:2x2", jax.devices()[:1], start=64, log=lambda m, r: None,
                                               known=cr.reports_of_search(down))
    assert best == 32 and compiled == [] and cr.search_report(resumed, 32)["memory_per_device"] == (
        reports[32]["memory_per_device"])


def test_a_search_goes_on_only_from_its_own_unfinished_record(tmp_path, monkeypatch):
    record = tmp_path / "row.json"
    args = ["--config=configs/pretrain_bert.py", "--topology=v5e:2x2", "--search", f"--output={record}"]
    saved = {"fits": True, "per_device_batch": 8, "memory_per_device": {"total_gib": 9.0}, "compile_seconds": 5.0,
             "largest_per_device_batch": None, "search_finished": False,
             "search": {"8": {"fits": True, "total_gib": 9.0, "compile_seconds": 5.0}},
             "command": " ".join(["python -m jaxmt.compile_report", *args, "--per_device_batch=8"])}
    monkeypatch.setattr(sys, "argv", ["compile_report.py", *args, "--per_device_batch=16"])  # another start
    assert cr._cut_short(str(record)) == {}  # no record yet
    record.write_text(json.dumps(saved))
    assert cr._cut_short(str(record)) == {8: {k: v for k, v in saved.items()
                                              if k not in ("largest_per_device_batch", "search_finished", "search",
                                                           "command")}}
    record.write_text(json.dumps({**saved, "search_finished": True}))
    assert cr._cut_short(str(record)) == {}  # finished: a new search starts afresh
    record.write_text(json.dumps({**saved, "command": saved["command"].replace("v5e:2x2", "v5e:4x4")}))
    assert cr._cut_short(str(record)) == {}  # another topology's
    record.write_text(json.dumps(saved)[:40])
    assert cr._cut_short(str(record)) == {}  # written half-way when killed


def test_bad_topology_and_unknown_model_are_one_line_errors():
    with pytest.raises(ConfigError, match="expected CHIP:SHAPE"):
        cr.chip_of("v9:2x2")
    with pytest.raises(ConfigError, match="expected CHIP:SHAPE"):
        cr.chip_of("v5e")
    config, tokenizer = cr.bert_config_of("bert-large-uncased")
    assert (config.hidden_size, config.num_hidden_layers, tokenizer) == (1024, 24, cr.SHAPE_TOKENIZER)
    run = subprocess.run([sys.executable, "-m", "jaxmt.compile_report", "--topology=v9:2x2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith("jaxmt: error: --topology=v9:2x2")


@needs_libtpu
def test_v4_topology_is_one_device_a_chip_and_any_layout_makes_a_mesh():
    from jax.experimental import topologies

    from jaxmt.parallel.mesh import make_mesh

    devices = cr.topology_devices("v4:2x2x1")  # a v4-8: 4 chips, megacore
    assert len(devices) == 4 and {d.device_kind for d in devices} == {"TPU v4"}
    assert dict(make_mesh(("data", "fsdp", "tensor"), (-1, 2, 1), devices).shape) == {"data": 2, "fsdp": 2,
                                                                                      "tensor": 1}
    cores = topologies.get_topology_desc(topology_name="v4:2x2x1", platform="tpu").devices  # one a TensorCore
    assert make_mesh(("data", "fsdp", "tensor"), (-1, 1, 1), cores).size == 8  # plain order, as before the fix


def _check_report(report: dict, topology: str, devices: int) -> None:
    assert report["topology"] == topology and report["devices"] == devices and report["fits"]
    memory = report["memory_per_device"]
    assert memory["arguments_bytes"] > 0 and memory["outputs_bytes"] > 0 and memory["temporaries_bytes"] >= 0
    assert memory["total_bytes"] == (memory["arguments_bytes"] + memory["outputs_bytes"] - memory["aliased_bytes"]
                                     + memory["temporaries_bytes"] + memory["generated_code_bytes"])
    assert memory["hbm_bytes"] == cr.chip_of(topology).hbm_bytes and 0 < memory["hbm_fraction"] < 1
    assert report["cost_per_device"]["flops"] > 0 and report["cost_per_device"]["bytes_accessed"] > 0
    roofline = report["roofline"]
    assert roofline["step_seconds"] == max(roofline["compute_seconds"], roofline["memory_seconds"]) > 0
    assert report["collectives"]["each"] and all(c["operand_bytes"] > 0 for c in report["collectives"]["each"])
    assert report["while_loops"]["count"] == sum(report["while_loops"]["by_op"].values())
    json.dumps(report)  # what the command prints


@needs_libtpu
def test_finetuning_step_compiles_for_a_v5e_slice(tiny_bert_dir):
    config = with_overrides(tiny_config(tiny_bert_dir), **{"optim.gradient_surgery": "pcgrad"})
    report = cr.compile_once(cr.with_per_device_batch(config, 4, 4), "v5e:2x2", cr.topology_devices("v5e:2x2"))
    _check_report(report, "v5e:2x2", 4)
    assert report["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and report["per_device_batch"] == 4
    assert report["global_batch"] == 3 * 16  # three tasks, 4 examples each on each of 4 devices
    assert report["batch_shapes"]["sst/input_ids"][0][0] % 4 == 0  # packed rows split over the 4 devices
    assert report["memory_per_device"]["temporaries_bytes"] > 0
    assert "all-reduce" in report["collectives"]["by_kind"]  # the data-parallel gradient sum


@needs_libtpu
def test_dumped_buffer_assignment_names_the_largest_temporaries(tiny_bert_dir, tmp_path):
    config = with_overrides(tiny_config(tiny_bert_dir), **{"optim.gradient_surgery": "pcgrad"})
    report = cr.compile_once(cr.with_per_device_batch(config, 4, 4), "v5e:2x2", cr.topology_devices("v5e:2x2"),
                             dump_to=str(tmp_path / "dump"))
    temps = report["temporaries"]
    assert temps["buffer_assignment"].startswith(str(tmp_path / "dump" / "per_device_4"))
    sizes = [v["bytes"] for v in temps["largest"]]
    assert sizes == sorted(sizes, reverse=True) and 0 < sizes[0] <= temps["allocated_bytes"]
    assert temps["values"] >= len(sizes) > 1
    # the allocations are the compiler's temporaries, as memory_analysis counts them
    assert temps["allocated_bytes"] >= report["memory_per_device"]["temporaries_bytes"] // 2
    assert all(v["shape"] and "{" not in v["shape"] and v["instruction"] for v in temps["largest"])
    assert any("jvp" in v["op_name"] or "transpose" in v["op_name"] or "train" in v["op_name"]
               for v in temps["largest"])  # op names come from the compiled HLO's metadata


def test_largest_temporaries_parses_the_buffer_assignment(tmp_path):
    (tmp_path / "module_0001.jit_step.after_optimizations-buffer-assignment.txt").write_text("""\
BufferAssignment:
allocation 0: size 64, parameter 0, shape |f32[4,4]| at ShapeIndex {}:
 value: <1 p @0> (size=64,offset=0): f32[4,4]{1,0}
allocation 1: size 96, output shape is |f32[4,4]|, maybe-live-out:
 value: <2 fusion.2 @0> (size=64,offset=0): f32[4,4]{1,0}
allocation 2: size 4096, preallocated-temp:
 value: <3 fusion.1 @0> (size=1024,offset=0): bf16[16,32]{1,0:T(8,128)(2,1)}
 value: <4 convolution.7{} @0> (size=4096,offset=0): f32[32,32]{1,0}
allocation 3: size 512, color 1, preallocated-temp:
 value: <5 copy-start @1> (size=512,offset=0): f32[128]{0:S(1)}
""")
    hlo = '  %convolution.7 = f32[32,32]{1,0} convolution(%a, %b), metadata={op_name="jit(step)/dot_general"}\n'
    temps = cr.largest_temporaries(str(tmp_path), hlo)
    assert temps["allocated_bytes"] == 4096 and temps["values"] == 2
    assert temps["largest"] == [
        {"bytes": 4096, "shape": "f32[32,32]", "instruction": "convolution.7", "op_name": "jit(step)/dot_general"},
        {"bytes": 1024, "shape": "bf16[16,32]", "instruction": "fusion.1", "op_name": ""}]
    assert temps["by_op"] == [{"op_name": "jit(step)/dot_general", "values": 1, "bytes": 4096},
                              {"op_name": "fusion.1", "values": 1, "bytes": 1024}]
    with pytest.raises(FileNotFoundError, match="no buffer assignment"):
        cr.largest_temporaries(str(tmp_path / "empty"), hlo)


@needs_libtpu
def test_pretraining_step_compiles_for_a_v4_slice_with_fsdp(bert_dir, tmp_path):  # noqa: F811 (fixture)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(synthetic_corpus(8, 4))
    config = tiny_pretrain_config(bert_dir, corpus, tmp_path / "cache", **{"mesh.shape": (1, -1, 1)})
    report = cr.compile_once(config, "v4:2x2x1", cr.topology_devices("v4:2x2x1"))
    _check_report(report, "v4:2x2x1", 4)
    assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and report["per_device_batch"] == 4
    assert report["batch_shapes"]["input_ids"][0] == [16, 24]
    assert {"all-gather", "reduce-scatter"} & set(report["collectives"]["by_kind"])  # FSDP's params and grads


def test_markdown_table_has_a_row_a_record(tmp_path):
    fitted = {"topology": "v5e:4x4", "devices": 16, "mesh": {"data": 16, "fsdp": 1, "tensor": 1},
              "per_device_batch": 256, "fits": True, "compile_seconds": 90.4, "largest_per_device_batch": 256,
              "memory_per_device": {"total_gib": 12.9, "hbm_bytes": cr.CHIPS["v5e"].hbm_bytes},
              "cost_per_device": {"flops": 5.5e12}, "roofline": {"step_seconds": 0.0312, "bound": "compute"},
              "collectives": {"by_kind": {"all-reduce": {"count": 3, "operand_bytes": 2e8}},
                              "total_operand_bytes": 2e8}}
    unfit = {"topology": "v4:2x2x1", "devices": 4, "mesh": {"data": 1, "fsdp": 4, "tensor": 1},
             "per_device_batch": 64, "fits": False, "compile_seconds": 30.0, "compiler_error": "Ran out of memory"}
    looped = {**fitted, "while_loops": {"count": 73, "by_op": {}}}
    (tmp_path / "a_fits.json").write_text(json.dumps(fitted))
    (tmp_path / "b_unfit.json").write_text(json.dumps(unfit))
    cut_short = {**fitted, "largest_per_device_batch": None, "search_finished": False}  # killed searching
    single = {k: v for k, v in fitted.items() if k != "largest_per_device_batch"}  # no --search
    (tmp_path / "c_looped.json").write_text(json.dumps(looped))
    (tmp_path / "d_cut_short.json").write_text(json.dumps(cut_short))
    (tmp_path / "e_single.json").write_text(json.dumps(single))
    head, rule, first, second, third, fourth, fifth = cr.markdown_table(str(tmp_path)).splitlines()
    assert head.count("|") == rule.count("|") == first.count("|") == second.count("|") == 11
    assert first == ("| a_fits | v5e:4x4 (16) | 16 x 1 | 256 | 12.90 (16) | 256 | 5500 | 3, 200 | 31.2 (compute) "
                     "| 90 |")
    assert "| b_unfit | v4:2x2x1 (4) | 1 x 4 | 64 | out of memory | - |" in second
    assert "| 5500 (73 loops) | 3, 200 |" in third  # its FLOPs count each loop body once
    assert "| 12.90 (16) | >= 256 (search unfinished) |" in fourth
    assert "| 12.90 (16) | >= 256 (twice not compiled) |" in fifth


def test_a_batch_larger_than_the_training_set_repeats_it_and_says_so(tiny_bert_dir):
    """A pod's global batch can exceed a task's training set; the report's shapes still come from real packing."""
    from jaxmt.parallel.mesh import make_mesh

    config = tiny_config(tiny_bert_dir)  # 64 training examples a task
    mesh = make_mesh(config.mesh.axes, config.mesh.shape, jax.devices()[:1])
    program = cr.finetune_program(cr.with_per_device_batch(config, 96, 1), mesh)
    assert program.repeated == {"sst": 2, "para": 2, "sts": 2} and program.global_batch == 3 * 96
    assert cr.finetune_program(cr.with_per_device_batch(config, 32, 1), mesh).repeated == {}
