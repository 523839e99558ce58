"""jaxmt: multitask BERT fine-tuning, AC-GAN-BERT, hierarchical pre-training and scale-out in JAX/Flax.

Command lines are `python -m jaxmt.<verb>` (train, evaluate, pretrain, qa, acgan, sweep, probe, plot);
the Python API is in docs/api.md, the data sets in docs/data.md.
"""

__version__ = "0.2.0"
