"""jaxmt: multitask BERT fine-tuning, AC-GAN-BERT, hierarchical pre-training and scale-out in JAX/Flax.

Command lines are `python -m jaxmt.<verb>` (train, evaluate, pretrain, qa, acgan, sweep, probe, plot)
or the matching `jaxmt-<verb>` console scripts; the Python API is in docs/api.md.
"""

__version__ = "0.2.0"
