"""Paper B, continued pre-training of all-MiniLM-L6-v2, hierarchical: each task on its own layer.

Bigram shift (word order) on layer 2, told which tokens moved, NSP in the middle on layer 4, masked LM on
the last layer (6), and NSP's pooled representation passed up to the MLM task ('add_cls'). Everything else
(steps, batch, learning rate, warm-up, data, held-out set, seed) is configs/pretrain_minilm.py's, so both runs
train on the same pairs in the same order (the masks differ where this run's bigram swaps drew first). Run:

    python -m jaxmt.pretrain --config=configs/pretrain_minilm_hierarchical.py \\
        --workdir=runs/paper_b/pretrain/hierarchical

or the whole paper B pipeline: `launch/paper_b.sh`.

Sizing, measured (docs/runs/paper_b/timings.tsv, 2026-12-05, with the token_labels head): 0.87 s a step (median
after compilation) on the idle 2-core CPU, 1000 steps in 15.3 minutes with start-up, evaluations and checkpoints.
"""

from ml_collections import ConfigDict

from . import pretrain_minilm

# Measured on the idle 2-core CPU: median seconds a step, and minutes for the whole run (docstring).
STEP_TIME = dict(seconds=0.87, run_minutes=15.3)


def get_config() -> ConfigDict:
    config = pretrain_minilm.get_config()
    config.task_names = ("mlm", "nsp", "bigram_shift")  # all three tasks
    config.tasks.bigram_shift.layer = 2  # word order low, on layer 2
    # A score per token, trained on which tokens the swap moved (the example's label is their maximum): with a
    # classifier of the mean-pooled layer, bigram shift stayed at 0.55-0.57 held-out after 1000 steps; with
    # this head, alone on layer 2, it reached 0.73 (docs/pretraining.md, "Bigram shift").
    config.tasks.bigram_shift.head = "token_labels"
    config.tasks.nsp.layer = 4  # sentence relation in the middle, on layer 4
    config.tasks.mlm.layer = 6  # masked LM on the last layer (so every layer gets a loss)
    config.transfer = "add_cls"  # NSP's pooled [CLS] state, projected, added to the [CLS] entering layer 5
    return config
