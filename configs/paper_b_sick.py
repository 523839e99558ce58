"""Paper B, downstream: SICK entailment (3-way), ~2.75 idle minutes a run on a 2-core CPU.

configs/entailment.py on SICK (its fixed 80/10/10 split by pair_ID: 7,973 training pairs, 961 dev pairs),
scored once at the end on the dev pairs (no model selection, so dev accuracy is a held-out figure; the test
pairs stay unused). launch/paper_b.sh runs it for three encoders and seeds 0, 1, 2:

    python -m jaxmt.train --config=configs/paper_b_sick.py --workdir=runs/paper_b/sick/minilm/seed0 \\
        --config.model.name=minilm --config.seed=0

Sizing, measured (docs/runs/paper_b/timings.tsv): a run takes ~2.75 minutes on the idle 2-core CPU (sized
from an estimate of ~5.5). 450 steps of 32 are ~1.8 passes over the training pairs.
"""

from ml_collections import ConfigDict

from . import entailment


def get_config() -> ConfigDict:
    config = entailment.get_config("sick")
    config.seed = 0  # seeds the head, dropout and the data order (launch/paper_b.sh: 0, 1, 2)
    config.model.name = "minilm"  # the encoder: minilm, or a pre-training run's WORKDIR/hf_model
    config.data.sick_file = "../shared/data/sick/SICK.txt"  # the SICK corpus (split by a hash of pair_ID)
    config.optim.learning_rate = 5e-5  # peak LR; 10% warm-up, linear decay
    config.num_steps = 450  # ~1.8 passes over SICK's 7,973 training pairs, ~2.75 idle minutes (docstring)
    config.log_every = 25  # steps between training-loss logs
    config.eval_every = 0  # score the dev pairs once, at the end
    config.checkpoint_every = 450  # checkpoint at the end only (a killed run restarts; it is short)
    return config
