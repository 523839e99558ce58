"""Where jaxmt's sized-row evaluation spends its time: the share of the predict step that is attention.

MiniLM's predict step (sst's head) on the first batch of each shape of sst's CS224N dev set in sized rows
(`jaxmt.data.eval_batches`), compiled three ways: as jaxmt runs it (`jax.nn.dot_product_attention`), with the
attention written out as two einsums and a softmax, and with attention replaced by an identity (the values
pass through: wrong predictions, only the time without attention). The three alternate in one process, each
shape timed `--repeats` times a round; the JSON gives each variant's best ms per batch and the attention share,
1 - identity / jaxmt.

    python benchmarks/eval_attention_share.py [--rounds=3] [--examples=300]
    taskset -c 1 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python benchmarks/eval_attention_share.py --out=benchmarks/results/eval_attention_share_cpu_1thread.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, write_result  # noqa: E402
from configs import pcgrad  # noqa: E402
from jaxmt.data.eval_batches import eval_packing, sized_eval_batches  # noqa: E402
from jaxmt.data.sources import load_splits, task_specs  # noqa: E402
from jaxmt.models import bert  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402
from jaxmt.training import setup  # noqa: E402
from jaxmt.training.step import make_predict_step  # noqa: E402

_CSV_DIR = flags.DEFINE_string("csv_dir", str(ROOT.parent / "shared" / "data" / "cs224n"), "CS224N data folder.")
_EXAMPLES = flags.DEFINE_integer("examples", 300, "The first N sst dev examples.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Runs of each shape a round (the mean is that round's time).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/eval_attention_share_cpu.json", "Where the JSON is written.")


def einsum_attention(query, key, value, mask=None, scale=1.0, implementation=None):
    """`jax.nn.dot_product_attention` written out: logits, masked softmax, weighted values."""
    del implementation
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), value)


def identity_attention(query, key, value, mask=None, scale=1.0, implementation=None):
    """No attention: the values pass through (the time of everything else)."""
    del query, key, mask, scale, implementation
    return value


def main(argv: list[str]) -> None:
    del argv
    config = pcgrad.get_config()
    config.model.name, config.data.source, config.data.csv_dir = "minilm", "csv", _CSV_DIR.value
    config.data.max_eval_examples = _EXAMPLES.value
    specs = task_specs(config)
    pretrained = load_pretrained(config.model.name)
    dev = setup.encode_splits(config, load_splits(config, {"sst": specs["sst"]}, "dev"), pretrained.tokenizer)
    model = setup.build_model(config, pretrained.config, specs)
    params = jax.jit(lambda p: model.init(jax.random.PRNGKey(config.seed), p))(pretrained.params)
    batches: dict = {}
    packing, pad_id = eval_packing(config.data.pack_length), pretrained.tokenizer.pad_token_id
    for _, batch in sized_eval_batches(dev["sst"], packing, pad_id):
        batches.setdefault(batch["input_ids"].shape, batch)
    fused = jax.nn.dot_product_attention
    compiled = {}
    try:
        for name, attention in (("jaxmt", fused), ("einsum", einsum_attention), ("identity", identity_attention)):
            bert.jax.nn.dot_product_attention = attention  # what BertSelfAttention calls, while it traces
            compiled[name] = {shape: jax.jit(make_predict_step(model, "sst")).lower(params, b).compile()
                              for shape, b in batches.items()}
    finally:
        bert.jax.nn.dot_product_attention = fused
    times: dict = {(name, shape): [] for name in compiled for shape in batches}
    for _ in range(_ROUNDS.value):
        for name, steps in compiled.items():
            for shape, step in steps.items():
                step(params, batches[shape]).block_until_ready()
                start = time.perf_counter()
                for _ in range(_REPEATS.value):
                    step(params, batches[shape]).block_until_ready()
                times[(name, shape)].append((time.perf_counter() - start) / _REPEATS.value)
    by_shape = {}
    for shape in batches:
        best = {name: min(times[(name, shape)]) * 1e3 for name in compiled}
        by_shape["x".join(map(str, shape))] = {
            **{f"{name}_ms": round(ms, 1) for name, ms in best.items()},
            "attention_share": round(1 - best["identity"] / best["jaxmt"], 3),
            "einsum_over_jaxmt": round(best["einsum"] / best["jaxmt"], 3)}
    out = Path(_OUT.value)
    write_result({"benchmark": "eval_attention_share", "model": config.model.name, "task": "sst",
                  "examples": len(dev["sst"].data), "rounds": _ROUNDS.value, "repeats": _REPEATS.value,
                  "method": "best of rounds, alternating the three compiled variants; share = 1 - identity / jaxmt",
                  "batches_rows_x_length": by_shape, **environment({"skipped": "not used"})},
                 out if out.is_absolute() else ROOT / out)


if __name__ == "__main__":
    app.run(main)
