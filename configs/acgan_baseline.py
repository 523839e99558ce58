"""The AC-GAN-BERT baseline: plain fine-tuning (linear head, cross-entropy) on the same labeled subset alone.

Identical to configs/acgan.py (task, data, labeled fraction and seed, steps, optimizer) except
gan.method, so `python -m jaxmt.acgan --config=configs/acgan_baseline.py` trains the baseline that
the sweep compares against; the unlabeled rows and the GAN fields are unused.
"""

from ml_collections import ConfigDict

from . import acgan


def get_config() -> ConfigDict:
    config = acgan.get_config()
    config.gan.method = "baseline"  # fine-tune encoder + linear head on the labeled subset only
    return config
