"""Paper B, continued pre-training of all-MiniLM-L6-v2, the baseline: masked LM and NSP both on layer 6.

MiniLM (6 layers, hidden 384) continued on the WikiText-2 test file only (the valid file stays unseen text
for probing) with BERT's two objectives at the last layer. configs/pretrain_minilm_hierarchical.py is the
same run (steps, batch, learning rate, data, held-out set, seed) with the tasks spread over the layers. Run:

    python -m jaxmt.pretrain --config=configs/pretrain_minilm.py --workdir=runs/paper_b/pretrain/baseline

or the whole paper B pipeline (both pre-trainings, SQuAD, SICK, probing): `launch/paper_b.sh`.

Sizing, measured (docs/runs/paper_b/timings.tsv, 2026-12-05): 0.90 s a step (median after compilation) on the
idle 2-core CPU, 1000 steps in 15.8 minutes with start-up, 11 held-out evaluations and 4 checkpoints; the
hierarchical config takes 0.94 s a step, 16.5 minutes. (num_steps was chosen from 20-step smoke runs on a loaded
machine, which predicted ~30 minutes.)
"""

from ml_collections import ConfigDict

from . import pretrain_bert

# Measured on the idle 2-core CPU: median seconds a step, and minutes for the whole run (docstring).
STEP_TIME = dict(seconds=0.90, run_minutes=15.8)


def get_config() -> ConfigDict:
    config = pretrain_bert.get_config()
    config.seed = 0  # seeds the new heads, dropout, pairs, masks and the held-out split (shared by both runs)
    config.task_names = ("mlm", "nsp")  # BERT's two objectives
    config.tasks.mlm.layer = 6  # masked LM on MiniLM's last layer
    config.tasks.nsp.layer = 6  # NSP (MiniLM's pooler + a new 2-way classifier) on the last layer too
    config.transfer = "none"  # both heads read layer 6: nothing to pass upward
    # Mean over the tokens, not [CLS]: all-MiniLM-L6-v2 was trained with mean pooling, and below its last layers
    # its [CLS] state hardly depends on the input (a linear probe on it is at chance for NSP on layers 1-4, 0.50
    # against 0.60-0.64 on the token mean; docs/pretraining.md). With 'cls', NSP on layer 4 stayed at chance.
    config.pooling = "mean"

    config.model.init_from = "minilm"  # continue from all-MiniLM-L6-v2: sizes, vocabulary and weights from it
    # WikiText-2 test file only: wikitext2-valid.txt stays unseen for the probes (jaxmt.probe's default corpus).
    config.data.files = ("../shared/data/corpus/wikitext2-test.txt",)
    config.data.max_length = 64  # tokens per pair, as the from-scratch runs and jaxmt.probe's --max_length
    config.data.heldout_fraction = 0.1  # 6 of the 62 articles held out: 356 held-out pairs (5% gave 89)
    config.data.max_eval_examples = 1024  # evaluate every held-out pair (there are fewer)

    config.optim.learning_rate = 5e-5  # peak LR: BERT fine-tuning's range, its high end for the new heads
    # The new heads (MLM transform, NSP, bigram shift, transfer projection) and the pooler start from random
    # weights: at 5e-5 NSP left chance only after ~500 steps on layer 6; at 1e-3 by step 200 on layer 4.
    config.optim.head_learning_rate = 1e-3
    config.optim.warmup_fraction = 0.06  # linear warm-up over the first 60 steps, then linear decay to 0

    config.batch_size = 32  # pairs a step: 32,000 pairs in all, ~8 passes over the 4,018 training pairs a pass
    config.num_steps = 1000  # 15.8 (baseline) / 16.5 (hierarchical) minutes on the idle 2-core CPU (docstring)
    config.log_every = 25  # steps between training-metric logs
    config.eval_every = 100  # a held-out evaluation every tenth of the run: shows when MLM loss flattens
    config.checkpoint_every = 250  # checkpoints for resumption after a kill (each ~240 MB, a few seconds)
    return config
