"""Paper A read in full on MiniLM: every part the paper names, the grid docs/results.md's ablations change.

A reading of Sun & Satish with every part switched on that the ablations test: the triplet
architecture (u, v and the jointly encoded pair c for para and sts), loss pairing (the two
sentence-pair tasks one objective against sentiment under PCGrad), the Sentence-BERT cosine head for
STS (all-MiniLM-L6-v2 was trained for it) and a faster learning rate for the new heads. Trained for
3.6 epochs of SST (packed steps draw ~19 SST sentences each). configs/paper_a.py, the recipe, is
this with a pair encoding chosen per task, which the ablations showed to be better.

    python -m jaxmt.train --config=configs/paper_a_triplet.py --workdir=runs/paper_a/triplet/seed0 --config.seed=0

launch/paper_a.sh runs it for 3 seeds and each ablation (one switch of it) for 2.
"""

from . import pcgrad


def get_config():
    config = pcgrad.get_config()
    config.data.source = "csv"  # the CS224N files in data.csv_dir
    config.model.pair_mode = "triplet"  # u, v and c = [CLS] a [SEP] b [SEP]; heads read [u; v; |u-v|; u*v; c]
    config.tasks.sts.head = "cosine"  # STS score from cos(u, v), Sentence-BERT's objective
    config.optim.surgery_groups = (("sst",), ("para", "sts"))  # loss pairing: pair tasks against sentiment
    config.optim.learning_rate = 5e-5  # encoder peak LR
    config.optim.head_learning_rate = 5e-4  # heads' peak LR (they start from random init)
    config.num_steps = 1400  # ~3.6 epochs of SST (7,544 rows), ~0.73 of Quora
    config.eval_every = 350  # four dev evaluations; the best checkpoint is kept
    config.checkpoint_every = 350
    config.log_every = 25
    return config
