"""Paper B, continued pre-training of all-MiniLM-L6-v2, hierarchical: each task on its own layer.

Bigram shift (word order) on layer 2, NSP in the middle on layer 4, masked LM on the last layer (6), and
NSP's pooled representation passed up to the MLM task ('add_cls'). Everything else (steps, batch, learning
rate, warm-up, data, held-out set, seed) is configs/pretrain_minilm.py's, so both runs train on the same
pairs in the same order (the masks differ where this run's bigram swaps drew first). Run:

    python -m jaxmt.pretrain --config=configs/pretrain_minilm_hierarchical.py \\
        --workdir=runs/paper_b/pretrain/hierarchical

or the whole paper B pipeline: `launch/paper_b.sh`.

Sizing: a 20-step smoke run of this config on the real corpus took 3.07 s a step (median after compilation)
on the 2-core CPU while another training job shared it (a loaded machine). At an assumed 0.6x that when idle
(1.84 s), its 1000 steps take ~31 minutes plus ~1.5 minutes of evaluations, checkpoints and start-up: about
32 minutes, under the ~35 minutes allowed for each pre-training run.
"""

from ml_collections import ConfigDict

from . import pretrain_minilm

# The smoke-run figure of this config: seconds a step on the loaded 2-core CPU, the assumed idle/loaded ratio.
STEP_TIME = dict(loaded_seconds=3.07, idle_factor=0.6)


def get_config() -> ConfigDict:
    config = pretrain_minilm.get_config()
    config.task_names = ("mlm", "nsp", "bigram_shift")  # all three tasks
    config.tasks.bigram_shift.layer = 2  # word order low, on layer 2
    config.tasks.nsp.layer = 4  # sentence relation in the middle, on layer 4
    config.tasks.mlm.layer = 6  # masked LM on the last layer (so every layer gets a loss)
    config.transfer = "add_cls"  # NSP's pooled [CLS] state, projected, added to the [CLS] entering layer 5
    return config
