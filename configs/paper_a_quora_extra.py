"""Paper A's recipe (configs/paper_a.py) with 9,250 more Quora training pairs: the only change.

quora-train-extra.csv holds labelled GLUE QQP training pairs that share no pair with quora-dev.csv or
any evaluation file (provenance in ../shared/data/README.md); with it the para task trains on 38,969
pairs instead of 29,719. Same steps, seeds and everything else as the recipe, so docs/results.md can
set the two side by side.

    python -m jaxmt.train --config=configs/paper_a_quora_extra.py --workdir=runs/paper_a/quora_extra/seed0 \\
        --config.seed=0
"""

from . import paper_a


def get_config():
    config = paper_a.get_config()
    config.tasks.para.train_files = ("quora-train.csv", "quora-train-extra.csv")  # read in order, rows concatenated
    return config
