"""Hierarchical multitask pre-training (Aksoy et al.): each task at its own encoder layer.

Bigram shift (word order) at layer 1, NSP at layer 2, masked LM at the last layer (4), and NSP's
representation passed upward to the MLM task ('add_cls'). Everything else as configs/pretrain_bert.py.
Run: `python -m jaxmt.pretrain --config=configs/pretrain_hierarchical.py --workdir=runs/pretrain_hierarchical`.
"""

from ml_collections import ConfigDict

from . import pretrain_bert


def get_config() -> ConfigDict:
    config = pretrain_bert.get_config()
    config.unlock()
    config.task_names = ("mlm", "nsp", "bigram_shift")  # all three tasks
    config.tasks.bigram_shift.layer = 1  # word order at the lowest layer
    config.tasks.nsp.layer = 2  # sentence relation in the middle
    config.tasks.mlm.layer = 4  # masked LM at the last layer
    config.transfer = "add_cls"  # NSP's pooled [CLS] state, projected, added to the [CLS] entering layer 3
    config.lock()
    return config
