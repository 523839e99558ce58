"""Baseline for configs/pcgrad.py: the same run with the three task losses summed."""

from . import default


def get_config():
    config = default.get_config()
    config.optim.gradient_surgery = "none"  # one gradient of the summed loss
    config.loss.combination = "sum"
    return config
