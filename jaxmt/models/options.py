"""The encoder's compute options, read from a config's `model` block the same way by every trainer.

`model.dtype`, `model.remat`, `model.remat_policy` and `model.attention_implementation` reach the BERT of
fine-tuning, pre-training, QA and the GAN through `EncoderOptions.from_config`, so one field means one thing
in every config (checked by `jaxmt.config_checks.check_model_options`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jaxmt.models.bert import attention_implementation

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


def compute_dtype(name: str) -> Any:
    """The compute dtype `model.dtype` names. 'auto': bfloat16 on an accelerator (GPU and TPU matrix units run it
    at several times float32's rate, and activations take half the memory), float32 on CPU (where bfloat16 is
    emulated and slower, and where the project's recorded figures were measured in float32)."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
    """Keyword arguments of `BertEncoder` / `BertModel` / `BertLayerStack` that a config decides."""

    dtype: Any = jnp.float32
    remat: bool = False
    remat_policy: str = "full"
    attention_implementation: str | None = None

    @classmethod
    def from_config(cls, model: ConfigDict) -> EncoderOptions:
        """From `model` (a config's model block; a run recorded before a field existed gets its default)."""
        return cls(dtype=compute_dtype(model.get("dtype", "float32")), remat=bool(model.get("remat", False)),
                   remat_policy=model.get("remat_policy", "full"),
                   attention_implementation=attention_implementation(model.get("attention_implementation",
                                                                               "default")))

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
