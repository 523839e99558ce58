"""The main job: sst + para + sts fine-tuned together with PCGrad gradient surgery.

Same run as configs/sum.py except that each task's gradient is computed on its own batch and
conflicting components are projected away (Yu et al. 2020) before the optimizer step.
"""

from . import default


def get_config():
    config = default.get_config()
    config.optim.gradient_surgery = "pcgrad"  # per-task gradients, projected, summed
    config.sampling = "all"  # PCGrad needs every task's gradient at every step
    return config
