"""A pre-training config must give every encoder layer a loss.

A head's loss only reaches the layers up to its own, so layers above the highest task layer would keep
their initial weights and still be exported as part of the encoder: a fine-tuning run would then start
from random (or stale) upper layers without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Mapping

from jaxmt.errors import ConfigError


def check_every_layer_trained(layers: Mapping[str, int], num_layers: int) -> None:
    """Raises ConfigError naming the untrained layers when no task reads the encoder's last layer."""
    highest = max(layers.values())
    if highest >= num_layers:
        return
    untrained = f"layer {num_layers}" if highest + 1 == num_layers else f"layers {highest + 1}-{num_layers}"
    at_top = ", ".join(f"config.tasks.{task}.layer" for task, layer in sorted(layers.items()) if layer == highest)
    raise ConfigError(f"encoder {untrained} of {num_layers} would get no loss (the highest task layer is "
                      f"{highest}: {at_top}); put a task at layer {num_layers} or use a {highest}-layer encoder")
