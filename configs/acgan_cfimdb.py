"""AC-GAN-BERT on a task of your own, added by a config file: CFIMDB binary movie-review sentiment.

The configs are locked (a misspelt `--config.x` is an error), so a new task is declared in a config
file like this one, not on the command line: a `config.tasks.<name>` block made with
`configs.default.task`, then `config.task_names`. Any single-sentence classification task in
CS224N-format files (`id`, `sentence`, `sentiment` columns) works the same way:

    python -m jaxmt.acgan --config=configs/acgan_cfimdb.py --workdir=runs/acgan_cfimdb
    python -m jaxmt.sweep --config=configs/acgan_cfimdb.py --workdir=runs/cfimdb_sweep --fractions=0.05,1.0
"""

from ml_collections import ConfigDict

from . import acgan, default


def get_config() -> ConfigDict:
    config = acgan.get_config()
    config.unlock()
    config.tasks.cfimdb = default.task(  # 2 classes, single sentences, files in data.csv_dir (no test file)
        "classification", pair=False, num_classes=2, files=("ids-cfimdb-train.csv", "ids-cfimdb-dev.csv", ""),
        batch_size=8)
    config.task_names = ("cfimdb",)  # the one task a GAN run trains
    config.data.source = "csv"  # the demo data has only sst, para and sts
    config.data.csv_dir = "../shared/data/cs224n"  # folder of the CSV files (expands ~ and $VARS)
    config.data.max_length = 128  # reviews are long: a paragraph each
    config.data.buckets = (64, 128)
    config.lock()
    return config
