#!/usr/bin/env bash
# The compile-report table of docs/scaling.md: a `python -m jaxmt.compile_report` run a row, skipping rows whose
# JSON exists (resumable: a search cut short goes on from the compiles its record holds). SEARCH=1: each row
# searches the largest power-of-two per-device batch from its start (--search); unset: one compile at the start
# batch. Run from a checkout (or snapshot) with ../shared/data beside it.
# Usage: [SEARCH=1] table.sh CHECKOUT_DIR OUT_DIR
set -u
SNAP=$1; OUT=$2
cd "$SNAP" || exit 1
PY=${PYTHON:-/work/main/.venv/bin/python}
BF16="--config.model.dtype=bfloat16"
A="--config=configs/paper_a_bert_base.py $BF16"
LARGE="--config.model.name=bert-large-uncased"
PT="--config=configs/pretrain_bert.py $BF16 --config.model.hidden_size=768 --config.model.num_layers=12 --config.model.num_heads=12 --config.model.intermediate_size=3072 --config.tasks.mlm.layer=12 --config.tasks.nsp.layer=12 --config.data.cache_dir=${CACHE:-/work/runs/cache/compile_report}"
L128="--config.data.max_length=128 --config.tasks.mlm.max_predictions=20"
L512="--config.data.max_length=512 --config.tasks.mlm.max_predictions=80"
DATA='--config.mesh.shape=(-1,1,1)'
FSDP='--config.mesh.shape=(1,-1,1)'
row() {  # name start topology args...
  local name=$1 start=$2 topo=$3; shift 3
  if [ -s "$OUT/$name.json" ]; then  # done; a search's copy saved mid-way (killed) says it is not finished
    grep -q '"search_finished": false' "$OUT/$name.json" || return
  fi
  echo "$(date -u +%FT%TZ) start $name"
  timeout 14400 "$PY" -m jaxmt.compile_report "$@" --topology="$topo" ${SEARCH:+--search} --per_device_batch="$start" \
    --output="$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) end $name rc=$?"
}
# Starts one power above the expected answer (v5e: 16 GiB of HBM, v4: 32 GiB; a data mesh's memory a device does
# not depend on the slice's size): an out-of-memory compile fails fast, so each row costs about one full compile.
# BERT-large on v4 starts at 512: 256 fitted (25.4 of 32 GiB) in a search cut short at 512.
row pt128_base_v5e16_data 1024 v5e:4x4 $PT $L128 "$DATA"
row pt512_base_v5e16_data 64 v5e:4x4 $PT $L512 "$DATA"
row pt128_base_v4-8_data 2048 v4:2x2x1 $PT $L128 "$DATA"
row pt512_base_v4-8_data 128 v4:2x2x1 $PT $L512 "$DATA"
row pt128_base_v5e16_fsdp 1024 v5e:4x4 $PT $L128 "$FSDP"
row pt512_base_v5e16_fsdp 64 v5e:4x4 $PT $L512 "$FSDP"
row pt128_base_v5e256_data 1024 v5e:16x16 $PT $L128 "$DATA"
row pt128_base_v5e256_fsdp 1024 v5e:16x16 $PT $L128 "$FSDP"
row pt512_base_v5e256_data 64 v5e:16x16 $PT $L512 "$DATA"
row pt512_base_v5e256_fsdp 64 v5e:16x16 $PT $L512 "$FSDP"
row pt128_base_v4-8_fsdp 2048 v4:2x2x1 $PT $L128 "$FSDP"
row pt512_base_v4-8_fsdp 128 v4:2x2x1 $PT $L512 "$FSDP"
row a_base_v5e16_data 512 v5e:4x4 $A "$DATA"
row a_base_v4-8_data 1024 v4:2x2x1 $A "$DATA"
row a_base_v5e16_fsdp 512 v5e:4x4 $A "$FSDP"
row a_base_v4-8_fsdp 1024 v4:2x2x1 $A "$FSDP"
row a_base_v5e256_data 512 v5e:16x16 $A "$DATA"
row a_base_v5e256_fsdp 512 v5e:16x16 $A "$FSDP"
row a_large_v5e16_data 128 v5e:4x4 $A $LARGE "$DATA"
row a_large_v4-8_data 512 v4:2x2x1 $A $LARGE "$DATA"
row a_large_v5e16_fsdp 128 v5e:4x4 $A $LARGE "$FSDP"
row a_large_v4-8_fsdp 512 v4:2x2x1 $A $LARGE "$FSDP"
row a_large_v5e256_data 128 v5e:16x16 $A $LARGE "$DATA"
row a_large_v5e256_fsdp 128 v5e:16x16 $A $LARGE "$FSDP"
echo "$(date -u +%FT%TZ) table done"
