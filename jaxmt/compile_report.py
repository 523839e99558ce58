"""Will a run fit a TPU pod? The real train step AOT-compiled for a TPU topology on a CPU-only host.

`python -m jaxmt.compile_report --config=configs/paper_a_bert_base.py --topology=v5e:4x4
[--config.mesh.shape=1,-1,1] [--per_device_batch=32 | --search]` (or `jaxmt-compile-report`) builds the
step exactly as the trainers do (`jaxmt.training.step.multitask_step_runner`, or the pre-training step
through `jaxmt.parallel.step_runner`), with the state's shardings from `jaxmt.parallel` and the batch
shapes of the config's own data layout, lowers it for the topology's devices (`jax.experimental.topologies`
with libtpu: `pip install -e ".[tpu]"` is enough, no TPU needed) and compiles it. It prints JSON: memory a
device (arguments, outputs, temporaries, against the chip's HBM), FLOPs and bytes a step, every collective
with its operand size, and a roofline step time from the chip's peak FLOP/s and HBM bandwidth.

Only shapes are read, never weights: params come from `jax.eval_shape` of the init, and a model named in
`BERT_SHAPES` (bert-base-uncased, bert-large-uncased, all-MiniLM-L6-v2) needs no files at all; any other
name is a local Hugging Face directory, of which only config.json and the tokenizer are read. The data
files are read: a packed batch's shape follows the data's mean length (`jaxmt.data.packing`).

What the roofline leaves out: collectives (their time depends on the slice's ICI and the overlap XLA
achieves), and float32 matmuls' lower rate (the peak is the bfloat16 matrix-unit rate), so it is a lower
bound on the step time. Like MaxText's train_compile.py, whose idea this is (no code of it is used).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from ml_collections import ConfigDict

from jaxmt.errors import ConfigError

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """A TPU chip's public figures: what one JAX device (a chip; megacore chips are one device) offers."""

    name: str
    peak_flops: float  # bfloat16 matrix-unit peak, FLOP/s a chip
    hbm_bytes: int  # HBM a chip
    hbm_bandwidth: float  # bytes/s a chip
    megacore: bool  # two TensorCores that JAX drives as one device


# Google Cloud's TPU system-architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e), figures a chip:
# v4: 275 TFLOP/s bf16, 32 GiB HBM2, 1,200 GB/s; v5e: 197 TFLOP/s bf16, 16 GiB HBM2, 819 GB/s;
# v5p: 459 TFLOP/s bf16, 95 GiB HBM2e, 2,765 GB/s; v6e (Trillium): 918 TFLOP/s bf16, 32 GiB HBM, 1,640 GB/s.
CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32 * GIB, 1200e9, megacore=True),
    "v5e": Chip("TPU v5e", 197e12, 16 * GIB, 819e9, megacore=False),
    "v5p": Chip("TPU v5p", 459e12, 95 * GIB, 2765e9, megacore=True),
    "v6e": Chip("TPU v6e", 918e12, 32 * GIB, 1640e9, megacore=False),
}

# Hugging Face config.json figures of the models the docs size (so no download is needed to read a shape).
# All three use BERT's uncased WordPiece vocabulary of 30,522 tokens, the MiniLM package's tokenizer.
BERT_SHAPES = {
    "bert-base-uncased": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=512),
    "bert-large-uncased": dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, max_position_embeddings=512),
    "all-MiniLM-L6-v2": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                             intermediate_size=1536, max_position_embeddings=512),
}
SHAPE_TOKENIZER = "minilm"  # the tokenizer of the BERT_SHAPES models (the same uncased vocabulary)

# Bytes an element of each HLO element type (sub-byte types rounded up to a byte).
HLO_BYTES = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2,
             "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def chip_of(topology: str) -> Chip:
    """The chip of a topology name 'v5e:4x4' (its part before the colon)."""
    kind = topology.split(":", 1)[0]
    if kind not in CHIPS or ":" not in topology:
        raise ConfigError(f"--topology={topology}: expected CHIP:SHAPE with CHIP one of {sorted(CHIPS)}, e.g. "
                          "v5e:4x4 (16 chips) or v4:2x2x1 (a v4-8)")
    return CHIPS[kind]


def topology_devices(topology: str) -> list:
    """The devices of a TPU topology, one a chip (megacore on v4 and v5p, as JAX runs those chips), for lowering
    and compiling on a host without TPUs; libtpu must be installed."""
    chip = chip_of(topology)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # a CPU process may hold libtpu's lock already
    from jax.experimental import topologies

    extra = {"chip_config_name": "megacore"} if chip.megacore else {}
    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu", **extra).devices)
    except Exception as err:  # jaxlib raises plain RuntimeError/XlaRuntimeError for both causes
        raise ConfigError(f"--topology={topology}: no TPU topology ({type(err).__name__}: {str(err)[:200]}); "
                          "it needs libtpu: pip install -e \".[tpu]\"") from None


def bert_config_of(name: str) -> tuple[Any, str]:
    """(transformers.BertConfig, tokenizer name or directory) of a model named in BERT_SHAPES, an alias or a
    local directory (only its config.json is read)."""
    from transformers import BertConfig

    if name in BERT_SHAPES:
        return BertConfig(**BERT_SHAPES[name]), SHAPE_TOKENIZER
    from jaxmt.models.pretrained import resolve_model_dir

    path = resolve_model_dir(name)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model {name!r}: {path} has no config.json")
    return BertConfig.from_pretrained(path, local_files_only=True), str(path)


@dataclasses.dataclass
class Program:
    """What is compiled: the trainer's jitted step and abstract (shape-only) arguments for it."""

    runner: Any  # JitStep
    args: tuple  # (state, batch, rng) as ShapeDtypeStructs
    global_batch: int  # examples a step (packed: the tasks' batch sizes, the mean a step holds)
    per_device_batch: float  # examples a device a step (fine-tuning: a task's)
    tokens: int  # token positions a step computes (all devices)
    params: int  # parameter count
    repeated: dict[str, int] = dataclasses.field(default_factory=dict)  # task -> times its training set is repeated


def _abstract(tree: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _param_count(state: Any) -> int:
    import jax

    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(state.params)))


def finetune_program(config: ConfigDict, mesh) -> Program:
    """The multitask fine-tuning step of `jaxmt.training.trainer`, with step 0's packed (or padded) batches."""
    import jax

    from jaxmt.core.rngs import stream_key
    from jaxmt.data.packing import train_step_batches
    from jaxmt.data.sources import load_splits, task_specs
    from jaxmt.parallel.mesh import data_parallel_size
    from jaxmt.parallel.sharding_rules import check_heads
    from jaxmt.pretraining.trainer import load_tokenizer
    from jaxmt.training import setup
    from jaxmt.training.optimizer import make_optimizer
    from jaxmt.training.step import init_state, multitask_step_runner
    from jaxmt.training.trainer import make_sampler

    setup.check_config(config)
    specs = task_specs(config)
    checked = config.copy_and_resolve_references()  # the evaluation step is not compiled here: its batch may be any
    checked.eval_batch_size = data_parallel_size(mesh)
    setup.check_batches_fit(checked, mesh)
    bert_config, tokenizer_name = bert_config_of(config.model.name)
    check_heads(bert_config.num_attention_heads, mesh)
    tokenizer = load_tokenizer(tokenizer_name)
    # A large slice's global batch can exceed a task's training set (paper A's 7,544 SST sentences are fewer than
    # 512 examples on each of 16 chips): the step's shapes, the report's question, do not depend on which examples
    # fill it, so such a set is repeated (once tokenized) until it holds one batch; the report records how often.
    train_split = setup.encode_splits(config, load_splits(config, specs, "train"), tokenizer)
    repeated = {}
    for task, split in train_split.items():
        times = -(-config.tasks[task].batch_size // len(split.input_ids))
        if times > 1:
            train_split[task], repeated[task] = split.repeated(times), times
    specs = {t: specs[t] for t in train_split}
    model = setup.build_model(config, bert_config, specs)
    groups = setup.surgery_groups(config, specs)
    tx = make_optimizer(config, config.num_steps, len(groups))
    init_rng = stream_key(config.seed, "init")
    state = jax.eval_shape(lambda: init_state(model, tx, init_rng, None))  # the encoder's shapes, random or not
    state_sharding = setup.state_shardings(state, mesh)
    runner = multitask_step_runner(config, mesh, model, tx, setup.loss_weights(config, specs), state_sharding)
    one_step = config.copy_and_resolve_references()
    one_step.num_steps = 1  # the sampler places every step's draws up front; step 0's shapes are every step's
    sampler = make_sampler(one_step, train_split, data_parallel_size(mesh))
    batches = train_step_batches(train_split, sampler, 0, config.data.buckets, tokenizer.pad_token_id)
    examples = sum(config.tasks[t].batch_size for t in batches)
    tokens = sum(int(math.prod(b["input_ids"].shape)) for b in batches.values())
    rng = jax.eval_shape(lambda: stream_key(config.seed, "dropout"))
    per_device = max(config.tasks[t].batch_size for t in batches) / data_parallel_size(mesh)
    return Program(runner, (state, _abstract(batches), rng), examples, per_device, tokens, _param_count(state),
                   repeated)


def pretrain_program(config: ConfigDict, mesh) -> Program:
    """The pre-training step of `jaxmt.pretraining.trainer` on [batch_size, max_length] batches."""
    import jax
    import numpy as np

    from jaxmt.config_checks import check_accumulation
    from jaxmt.core.rngs import stream_key
    from jaxmt.models.options import EncoderOptions
    from jaxmt.parallel.mesh import check_divisible, data_parallel_size
    from jaxmt.parallel.sharding_rules import check_heads
    from jaxmt.parallel.state_sharding import state_shardings
    from jaxmt.parallel.step_runner import make_step_runner
    from jaxmt.pretraining import trainer
    from jaxmt.pretraining.corpus import CorpusSpec, load_corpus, split_heldout
    from jaxmt.pretraining.examples import PairStream, Vocabulary, make_batch
    from jaxmt.pretraining.model import PRETRAINED_SCOPES, HierarchicalBert
    from jaxmt.pretraining.step import init_train_state, make_train_step
    from jaxmt.training.optimizer import make_optimizer

    trainer.check_config(config)
    if config.model.init_from:  # a checkpoint's shape, read without its weights
        bert_config, tokenizer_name = bert_config_of(config.model.init_from)
        tokenizer = trainer.load_tokenizer(tokenizer_name)
    else:
        bert_config, _, tokenizer = trainer.model_source(config)
    layers = trainer.task_layers(config, bert_config.num_hidden_layers)
    if config.data.max_length > bert_config.max_position_embeddings:
        raise ConfigError(f"config.data.max_length = {config.data.max_length} exceeds the model's "
                          f"{bert_config.max_position_embeddings} position embeddings")
    check_divisible(config.batch_size, mesh, "config.batch_size")
    check_accumulation(config.batch_size, config.optim.accumulation_steps, data_parallel_size(mesh), "batch_size")
    check_heads(bert_config.num_attention_heads, mesh)
    vocab = Vocabulary.from_tokenizer(tokenizer)
    corpus = load_corpus(CorpusSpec.from_config(config.data), tokenizer, config.data.cache_dir or None)
    train_corpus, _ = split_heldout(corpus, config.data.heldout_fraction, config.seed)
    stream = PairStream(train_corpus, vocab, config.data.max_length, config.data.short_seq_prob, config.seed)
    example = make_batch(stream.batch(0, 2), vocab, np.random.default_rng([config.seed, 0, 2]),
                         config.tasks.mlm.mask_rate, config.tasks.mlm.max_predictions,
                         "bigram_shift" in config.task_names, config.tasks.bigram_shift.unit)
    batch = {k: jax.ShapeDtypeStruct((config.batch_size,) + v.shape[1:], v.dtype) for k, v in example.items()}
    model = HierarchicalBert(bert_config, layers, config.transfer, config.pooling, config.tasks.bigram_shift.head,
                             **EncoderOptions.from_config(config.model).kwargs())
    tx = make_optimizer(config, config.num_steps, len(layers), encoder_scopes=PRETRAINED_SCOPES)
    init_rng = stream_key(config.seed, "init")
    state = jax.eval_shape(lambda: init_train_state(model, tx, init_rng, example, None))
    state_sharding = state_shardings(state, mesh)
    weights = {task: float(config.tasks[task].weight) for task, _ in layers}
    accumulation = config.optim.accumulation_steps
    runner = make_step_runner(config.parallel.mode, mesh,
                              lambda axis: make_train_step(model, tx, weights, axis, accumulation), state_sharding)
    rng = jax.eval_shape(lambda: stream_key(config.seed, "dropout"))
    return Program(runner, (state, batch, rng), config.batch_size, config.batch_size / data_parallel_size(mesh),
                   config.batch_size * config.data.max_length, _param_count(state))


def is_pretraining(config: ConfigDict) -> bool:
    """Pre-training configs name their NSP -> MLM transfer (what `jaxmt.pretrain` checks too)."""
    return "transfer" in config


def with_per_device_batch(config: ConfigDict, per_device: int, data_parallel: int) -> ConfigDict:
    """A copy of `config` whose batch (every task's, for fine-tuning) is `per_device` examples a device."""
    config = config.copy_and_resolve_references()
    if is_pretraining(config):
        config.batch_size = per_device * data_parallel
    else:
        for name in config.task_names:
            config.tasks[name].batch_size = per_device * data_parallel
    return config


def _array_bytes(shape_text: str) -> int:
    """Bytes of every array in an HLO shape ('f32[768,3072]{1,0}', or a tuple of them)."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]", shape_text):
        if dtype in HLO_BYTES:
            total += HLO_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")
OP_NAME = re.compile(r'op_name="([^"]*)"')


def _op_name(instruction_line: str) -> str:
    """The JAX op an HLO instruction came from (its metadata's op_name), or '' for one the compiler made up."""
    found = OP_NAME.search(instruction_line)
    return found.group(1) if found else ""


def _fold_layers(op_name: str) -> str:
    """An op name with its layer number folded (`encoder.run_layer/3/...` -> `encoder.run_layer/*/...`), so the
    twelve layers' instances of one op group together."""
    return re.sub(r"/\d+/", "/*/", op_name)


def collectives(hlo_text: str) -> list[dict[str, Any]]:
    """Every collective of a compiled (partitioned) HLO module: kind, operand bytes, result shape, groups.

    Operand sizes come from the operands' own definitions (the compiled text names operands without their
    shapes); asynchronous pairs are counted once, at their '-start'. A collective inside a loop body is
    listed once, however often the loop runs.
    """
    shapes, found = {}, []
    for line in hlo_text.splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, op, rest = match.groups()
        shapes[name] = shape
        kind = op[:-len("-start")] if op.endswith("-start") else op
        if kind not in COLLECTIVES:
            continue
        operand_text = rest.split(")", 1)[0]
        operands = re.findall(r"%([\w.\-]+)", operand_text)
        groups = re.search(r"replica_groups=(\[[^\]]*\]<=\[[^\]]*\](?:T\([^)]*\))?|\{[^}]*\}(?:\}|)|mesh\[[^\]]*\]"
                           r"(?: \{[^}]*\})?)", line)
        found.append({
            "kind": kind,
            "operand_bytes": sum(_array_bytes(shapes.get(o, "")) for o in operands),
            "result": re.sub(r"\{[^}]*\}", "", shape),
            "replica_groups": groups.group(1) if groups else "",
            "op_name": _op_name(line),
        })
    return found


def while_loops(hlo_text: str) -> dict[str, int]:
    """The compiled module's while loops, counted by the JAX op they came from (layer numbers folded).

    XLA's cost analysis counts a loop body's FLOPs and bytes once, however often it runs, so a step with loops
    reports less than it does. On an FSDP mesh XLA's TPU compiler may compute a weight gradient and its
    reduce-scatter as a windowed einsum (a loop over the shards with collective-permutes; its op name is the
    gradient's `dot_general`): the report's FLOPs then leave out all but one iteration of those matmuls."""
    loops: dict[str, int] = {}
    for line in hlo_text.splitlines():
        match = INSTRUCTION.match(line)
        if match and match.group(3) == "while":
            name = _fold_layers(_op_name(line)) or match.group(1)
            loops[name] = loops.get(name, 0) + 1
    return loops


ALLOCATION = re.compile(r"^allocation \d+: size (\d+)(.*):$")
VALUE = re.compile(r"^\s*value: <\d+ ([\w.\-]+)(?:\{[^}]*\})? @\d+> \(size=(\d+),offset=\d+\): (.*)$")


def largest_temporaries(dump_dir: str, hlo_text: str, top: int = 15) -> dict[str, Any]:
    """The largest values XLA placed in the step's temporary HBM allocations, from the compiler's buffer assignment
    dumped into `dump_dir` (`xla_dump_to`): which arrays make the `temporaries_bytes`, each with its HLO
    instruction and the JAX op it came from (`hlo_text`: the compiled module, for the op names), and the bytes by
    op with layer numbers folded (`by_op`: `encoder.run_layer/*/intermediate/...` sums the twelve layers' values).
    Values whose live ranges do not overlap share bytes, so their sizes add up to more than the allocation."""
    from etils import epath

    dumps = sorted(epath.Path(dump_dir).glob("*after_optimizations-buffer-assignment.txt"),
                   key=lambda f: f.stat().length)
    if not dumps:
        raise FileNotFoundError(f"{dump_dir}: no buffer assignment was dumped (xla_dump_to)")
    op_names = {m.group(1): _op_name(line) for line in hlo_text.splitlines() if (m := INSTRUCTION.match(line))}
    values, allocated, in_temp = [], 0, False
    for line in dumps[-1].read_text().splitlines():  # the largest module: the train step
        header = ALLOCATION.match(line)
        if header:
            tags = header.group(2)
            in_temp = not re.search(r"parameter|constant|output shape|maybe-live-out|color [1-9]", tags)
            allocated += int(header.group(1)) if in_temp else 0
            continue
        value = VALUE.match(line)
        if in_temp and value:
            name, size, shape = value.groups()
            values.append({"bytes": int(size), "shape": re.sub(r"\{[^}]*\}", "", shape).strip(),
                           "instruction": name, "op_name": op_names.get(name, "")})
    values.sort(key=lambda v: -v["bytes"])
    by_op: dict[str, dict[str, int]] = {}
    for v in values:
        group = by_op.setdefault(_fold_layers(v["op_name"]) or v["instruction"], {"values": 0, "bytes": 0})
        group["values"] += 1
        group["bytes"] += v["bytes"]
    ops = sorted(by_op.items(), key=lambda kv: -kv[1]["bytes"])[:top]
    return {"allocated_bytes": allocated, "values": len(values), "largest": values[:top],
            "by_op": [{"op_name": name, **group} for name, group in ops], "buffer_assignment": str(dumps[-1])}


def summarize(compiled, chip: Chip, compile_seconds: float, program: Program, mesh) -> dict[str, Any]:
    """The report's figures from a compiled step."""
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    args, outputs = memory.argument_size_in_bytes, memory.output_size_in_bytes
    aliased, temps, code = memory.alias_size_in_bytes, memory.temp_size_in_bytes, memory.generated_code_size_in_bytes
    total = args + outputs - aliased + temps + code
    flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    compute_s, memory_s = flops / chip.peak_flops, accessed / chip.hbm_bandwidth
    step_s = max(compute_s, memory_s)
    text = compiled.as_text()
    found, loops = collectives(text), while_loops(text)
    by_kind: dict[str, dict[str, int]] = {}
    for c in found:
        entry = by_kind.setdefault(c["kind"], {"count": 0, "operand_bytes": 0})
        entry["count"] += 1
        entry["operand_bytes"] += c["operand_bytes"]
    return {
        "fits": total <= chip.hbm_bytes,
        "compile_seconds": round(compile_seconds, 1),
        "memory_per_device": {
            "arguments_bytes": args, "outputs_bytes": outputs, "aliased_bytes": aliased,
            "temporaries_bytes": temps, "generated_code_bytes": code, "total_bytes": total,
            "total_gib": round(total / GIB, 3), "hbm_bytes": chip.hbm_bytes,
            "hbm_fraction": round(total / chip.hbm_bytes, 4),
        },
        "cost_per_device": {"flops": flops, "bytes_accessed": accessed,
                            "transcendentals": float(cost.get("transcendentals", 0.0))},
        "roofline": {
            "peak_flops": chip.peak_flops, "hbm_bandwidth": chip.hbm_bandwidth,
            "compute_seconds": compute_s, "memory_seconds": memory_s, "step_seconds": step_s,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "examples_per_second": program.global_batch / step_s if step_s else None,
            "note": "max(FLOPs / peak bf16 FLOP/s, bytes accessed / HBM bandwidth); collectives and float32 "
                    "matmul rates not included: a lower bound on the step time",
        },
        "collectives": {"by_kind": by_kind, "total_operand_bytes": sum(c["operand_bytes"] for c in found),
                        "each": found},
        "while_loops": {"count": sum(loops.values()), "by_op": loops,
                        "note": "cost_per_device counts each loop body once, however often it runs"},
        "mesh": dict(mesh.shape),
    }


def _out_of_memory(err: Exception) -> str | None:
    """The compiler's out-of-memory line, if that is why compilation failed."""
    text = str(err)
    if "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "exceeds" in text and "memory" in text:
        lines = [line for line in text.splitlines() if "memory" in line.lower()]
        return (lines[0] if lines else text.splitlines()[0])[:500]
    return None


def compile_once(config: ConfigDict, topology: str, devices: list, dump_to: str = "") -> dict[str, Any]:
    """Builds the config's train step for the topology's mesh, compiles it and returns its figures (or, when the
    compiler runs out of HBM, `fits: False` and its message). With `dump_to` the compiler's dumps go to
    `dump_to/per_device_N` and the report lists the largest temporary buffers (`largest_temporaries`)."""
    from jaxmt.parallel.mesh import data_parallel_size, make_mesh

    if config.parallel.mode != "jit":
        raise ConfigError(f"config.parallel.mode = {config.parallel.mode!r}: the compile report compiles the sharded "
                          "jit step (set --config.parallel.mode=jit)")
    chip = chip_of(topology)
    if config.model.get("dtype") == "auto":  # 'auto' is bfloat16 on a TPU, whatever backend this host has
        config = config.copy_and_resolve_references()
        config.model.dtype = "bfloat16"
    mesh = make_mesh(config.mesh.axes, config.mesh.shape, devices)
    program = pretrain_program(config, mesh) if is_pretraining(config) else finetune_program(config, mesh)
    start = time.perf_counter()
    lowered = program.runner.lower(*program.args)
    shape = {
        "topology": topology, "chip": chip.name, "devices": len(devices), "mesh": dict(mesh.shape),
        "data_parallel": data_parallel_size(mesh), "global_batch": program.global_batch,
        "per_device_batch": program.per_device_batch, "tokens_per_step": program.tokens,
        "params": program.params, "compute_dtype": config.model.dtype, "remat": bool(config.model.get("remat", False)),
        "accumulation_steps": config.optim.get("accumulation_steps", 1),
        **({"training_set_repeated": program.repeated} if program.repeated else {}),
        "batch_shapes": {"/".join(str(getattr(k, "key", k)) for k in path): [list(x.shape), str(x.dtype)]
                         for path, x in _leaves_with_path(program.args[1])},
    }
    dump_dir = f"{dump_to.rstrip('/')}/per_device_{program.per_device_batch:g}" if dump_to else ""
    try:
        compiled = lowered.compile(compiler_options={"xla_dump_to": dump_dir} if dump_dir else None)
    except Exception as err:  # XlaRuntimeError; only an out-of-memory verdict is an answer, anything else re-raises
        reason = _out_of_memory(err)
        if reason is None:
            raise
        return {**shape, "fits": False, "compile_seconds": round(time.perf_counter() - start, 1),
                "compiler_error": reason}
    report = {**shape, **summarize(compiled, chip, time.perf_counter() - start, program, mesh)}
    if dump_dir:
        report["temporaries"] = largest_temporaries(dump_dir, compiled.as_text())
    return report


def _leaves_with_path(tree: Any):
    import jax

    return jax.tree_util.tree_flatten_with_path(tree)[0]


def search_report(reports: dict[int, dict], best: int | None, finished: bool = True) -> dict[str, Any]:
    """The search's JSON: the largest fitting compile's report (`best`; None while searching: the largest that fit
    so far), `largest_per_device_batch` (None until the search ends, or where nothing fits), `search_finished`
    (False in the copies saved while searching: table.sh compiles such a row again) and every compile's verdict."""
    fitted = [b for b, r in reports.items() if r["fits"]]
    shown = best if best is not None else max(fitted, default=None)
    return {**(reports[shown] if shown is not None else {}), "largest_per_device_batch": best,
            "search_finished": finished,
            "search": {str(k): {"fits": r["fits"], "total_gib": r.get("memory_per_device", {}).get("total_gib"),
                                "compile_seconds": r["compile_seconds"],
                                **({"compiler_error": r["compiler_error"]} if "compiler_error" in r else {})}
                       for k, r in sorted(reports.items())}}


def reports_of_search(record: dict[str, Any]) -> dict[int, dict]:
    """The compiles a saved search record (`search_report`'s JSON) holds, as `search_per_device_batch` keeps
    them: the record's own batch with its whole report, every other batch with its verdict alone (fits, GiB,
    seconds, the compiler's error), which is all the search reads of it. Lets a search cut short go on from
    where it stopped instead of compiling again what it had answered (half an hour a BERT-large compile)."""
    shown = {k: v for k, v in record.items() if k not in ("largest_per_device_batch", "search_finished", "search",
                                                          "command")}
    reports: dict[int, dict] = {}
    for batch, verdict in record.get("search", {}).items():
        reports[int(batch)] = {"fits": verdict["fits"], "compile_seconds": verdict["compile_seconds"],
                               **({"memory_per_device": {"total_gib": verdict["total_gib"]}}
                                  if verdict.get("total_gib") is not None else {}),
                               **({"compiler_error": verdict["compiler_error"]} if "compiler_error" in verdict
                                  else {})}
    if shown.get("per_device_batch") in reports:
        reports[shown["per_device_batch"]] = shown
    return reports


def search_per_device_batch(config: ConfigDict, topology: str, devices: list, start: int = 8,
                            log: Callable[[str, dict], None] | None = None,
                            dump_to: str = "",
                            known: dict[int, dict] | None = None) -> tuple[int | None, dict[int, dict]]:
    """The largest power-of-two per-device batch whose step fits the chip's HBM, and every compile's report.

    Walks from `start`: down by halves while the step does not fit, up by doubles while it does. Start high: a
    compile that runs out of HBM fails within a minute or two, one that fits takes the whole compile (23-35
    minutes for BERT-base on a loaded 2-core host), so a start one power above the answer costs one full compile.
    (Memory is far from linear in the batch, XLA rematerializes under pressure, so no line predicts the answer.)
    `log(message, reports)` is called after each compile (default: the message to stderr); `dump_to` as in
    `compile_once`; `known`: compiles already made (`reports_of_search` of a search cut short), not made again.
    """
    log = log or (lambda message, reports: print(message, file=sys.stderr))
    from jaxmt.parallel.mesh import data_parallel_size, make_mesh

    data_parallel = data_parallel_size(make_mesh(config.mesh.axes, config.mesh.shape, devices))
    reports: dict[int, dict] = dict(known or {})

    def fits(per_device: int) -> bool:
        if per_device in reports:  # answered before the search was cut short
            return reports[per_device]["fits"]
        reports[per_device] = compile_once(with_per_device_batch(config, per_device, data_parallel), topology, devices,
                                           dump_to=dump_to)
        r = reports[per_device]
        log(f"per-device batch {per_device}: fits={r['fits']} "
            f"({r.get('memory_per_device', {}).get('total_gib', '-')} GiB, {r['compile_seconds']} s to compile)",
            reports)
        return r["fits"]

    if fits(start):
        best = start
        while fits(2 * best):
            best *= 2
        return best, reports
    best = start // 2
    while best >= 1 and not fits(best):
        best //= 2
    return (best or None), reports


def markdown_table(folder: str) -> str:
    """A markdown table of the reports (`--output` JSON files) in `folder`, a row a file, named by its stem; FLOPs
    marked '(N loops)' leave out all but one iteration of the step's N while loops (`while_loops`)."""
    from etils import epath

    head = ("| report | topology (chips) | mesh data x fsdp | per-device batch | GiB a device (of HBM) | largest "
            "power of two that fits | GFLOP a step a device | collectives (count, operand MB) | roofline ms "
            "(bound) | compile s |\n|" + "---|" * 10)
    rows = [head]
    for path in sorted(epath.Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        memory = r.get("memory_per_device", {})
        gib = f"{memory['total_gib']:.2f} ({memory['hbm_bytes'] / GIB:.0f})" if memory else "out of memory"
        if r.get("largest_per_device_batch") is not None:
            largest = str(r["largest_per_device_batch"])
        elif r["fits"]:  # a single compile, or a search cut short (killed) after this batch fitted
            largest = f">= {r['per_device_batch']:g} (" + (
                "search unfinished" if r.get("search_finished") is False else "twice not compiled") + ")"
        else:
            largest = "-"
        collective = r.get("collectives", {})
        count = sum(k["count"] for k in collective.get("by_kind", {}).values())
        roof = r.get("roofline", {})
        n_loops = r.get("while_loops", {}).get("count", 0)
        loops = f" ({n_loops} loop{'s' if n_loops > 1 else ''})" if n_loops else ""
        rows.append(
            f"| {path.stem} | {r['topology']} ({r['devices']}) | {r['mesh']['data']} x {r['mesh']['fsdp']} | "
            f"{r['per_device_batch']:g} | {gib} | {largest} | "
            f"{r.get('cost_per_device', {}).get('flops', 0) / 1e9:.0f}{loops} | "
            f"{count}, {collective.get('total_operand_bytes', 0) / 1e6:.0f} | "
            f"{roof.get('step_seconds', 0) * 1e3:.1f} ({roof.get('bound', '-')}) | {r['compile_seconds']:.0f} |")
    return "\n".join(rows)


def _command() -> str:
    """This run's command line, as records keep it (`command`)."""
    return " ".join(["python -m jaxmt.compile_report"] + sys.argv[1:])


def _same_search(command: str, other: str) -> bool:
    """Whether two commands ask the same search (the start batch aside, which only sets where it walks from)."""
    def words(text: str) -> list[str]:
        return [w for w in text.split() if not w.startswith("--per_device_batch")]
    return words(command) == words(other)


def _cut_short(output: str) -> dict[int, dict]:
    """The compiles of this very search saved in `output` by a run that was cut short (killed), to go on from;
    none where there is no such record, it finished, or it was a different command's."""
    from etils import epath

    if not output or not epath.Path(output).exists():
        return {}
    try:
        record = json.loads(epath.Path(output).read_text())
    except json.JSONDecodeError:  # written half-way when killed: nothing to go on from
        return {}
    if record.get("search_finished") is not False or not _same_search(record.get("command", ""), _command()):
        return {}
    known = reports_of_search(record)
    print(f"going on from the search cut short in {output}: per-device batches {sorted(known)} already compiled",
          file=sys.stderr)
    return known


def run(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    from absl import app, flags

    from jaxmt.cli import define_config_flag, parse_flags, setup_logging

    define_config_flag("configs/paper_a_bert_base.py")
    flags.DEFINE_string("topology", "v5e:2x2", "TPU topology CHIP:SHAPE, e.g. v4:2x2x1 (v4-8), v5e:4x4, v5e:16x16.")
    flags.DEFINE_integer("per_device_batch", 0, "Examples a device a step (0 = the config's own batch sizes).")
    flags.DEFINE_boolean("search", False, "Find the largest power-of-two per-device batch that fits the HBM.")
    flags.DEFINE_string("output", "", "Also write the JSON to this file.")
    flags.DEFINE_string("dump_to", "", "Write the compiler's dumps here (a local folder) and list the largest "
                        "temporary buffers in the report ('temporaries'): what makes the step's memory.")
    flags.DEFINE_string("table", "", "Print a markdown table of the reports (JSON files) in this folder, and exit.")

    def main(argv_: list[str]) -> None:
        del argv_
        setup_logging()
        from jaxmt.training.faults import user_facing_errors

        FLAGS = flags.FLAGS
        if FLAGS.table:
            print(markdown_table(FLAGS.table))
            return

        def write(report: dict) -> str:
            """The report as JSON, with its command; written to --output too."""
            report["command"] = _command()
            text = json.dumps(report, indent=2, sort_keys=True)
            if FLAGS.output:
                from etils import epath

                epath.Path(FLAGS.output).write_text(text + "\n")
            return text
        config = FLAGS.config
        with user_facing_errors():
            devices = topology_devices(FLAGS.topology)
            from jaxmt.parallel.mesh import data_parallel_size, make_mesh

            data_parallel = data_parallel_size(make_mesh(config.mesh.axes, config.mesh.shape, devices))
            if FLAGS.search:
                def log(message: str, reports: dict) -> None:  # each compile's verdict, and the search so far saved
                    print(message, file=sys.stderr)
                    write(search_report(reports, None, finished=False))

                best, reports = search_per_device_batch(config, FLAGS.topology, devices,
                                                        FLAGS.per_device_batch or 8, log=log,
                                                        dump_to=FLAGS.dump_to, known=_cut_short(FLAGS.output))
                report = search_report(reports, best)
            else:
                if FLAGS.per_device_batch:
                    config = with_per_device_batch(config, FLAGS.per_device_batch, data_parallel)
                report = compile_once(config, FLAGS.topology, devices, FLAGS.dump_to)
        print(write(report))

    app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
