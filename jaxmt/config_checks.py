"""Config checks shared by every trainer: allowed choices, the encoder's compute options, and the valid range of
every numeric field, so a bad value stops the run with one line before anything loads or compiles.

`check_ranges` is driven by `RANGE_RULES`, a table from field patterns to ranges; the first rule whose
pattern matches a field's dotted path decides. tests/test_config_checks.py asserts that every numeric
field of every configs/*.py file is matched by some rule, so a new field needs a rule here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterator
from typing import Any

import jax
from ml_collections import ConfigDict

from jaxmt.errors import ConfigError
from jaxmt.models.bert import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES
from jaxmt.models.options import DTYPE_CHOICES, DTYPES  # noqa: F401  (DTYPES: where callers used to import it)


def one_of(value: object, allowed: tuple, field: str) -> None:
    """Raises ConfigError naming `config.<field>` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"config.{field} = {value!r}; expected one of {allowed}")


def check_model_options(model: ConfigDict) -> None:
    """model.dtype, model.remat_policy and model.attention_implementation (jaxmt.models.options.EncoderOptions)."""
    one_of(model.dtype, DTYPE_CHOICES, "model.dtype")
    one_of(model.remat_policy, tuple(REMAT_POLICIES), "model.remat_policy")
    one_of(model.attention_implementation, ATTENTION_IMPLEMENTATIONS, "model.attention_implementation")
    if model.attention_implementation == "cudnn":
        if jax.default_backend() != "gpu":
            raise ConfigError(f"config.model.attention_implementation = 'cudnn' needs an NVIDIA GPU; this run's "
                              f"backend is {jax.default_backend()!r} (use 'default' or 'xla')")
        if model.dtype == "float32":
            raise ConfigError("config.model.attention_implementation = 'cudnn' runs in bfloat16 or float16 only: "
                              "set config.model.dtype to 'auto' or 'bfloat16'")


def check_accumulation(batch_size: int, steps: int, data_parallel: int, field: str) -> None:
    """`field` (a global batch of `batch_size` rows) must split into `steps` micro-batches (optim.accumulation_steps)
    of equal rows on each of the `data_parallel` devices it is split over."""
    if batch_size % (steps * data_parallel):
        raise ConfigError(f"config.{field} = {batch_size} does not split into config.optim.accumulation_steps = "
                          f"{steps} micro-batches over {data_parallel} data-parallel device(s): make it a multiple of "
                          f"{steps * data_parallel}")


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval of valid values, optionally with one out-of-interval sentinel (e.g. -1 = all)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    sentinel: int | None = None
    meaning: str = ""  # what the sentinel means, for the message

    def contains(self, value: float) -> bool:
        if self.sentinel is not None and value == self.sentinel:
            return True
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            text = "a finite number"
        elif self.high == math.inf:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.low == -math.inf:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.sentinel is not None:
            text += f" or {self.sentinel} ({self.meaning})"
        return text


POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
DROPOUT = Range(0, 1, high_open=True)
PROBABILITY = Range(0, 1)
OPEN_FRACTION = Range(0, 1, low_open=True, high_open=True)
ANY_FINITE = Range()
EXAMPLE_CAP = Range(1, sentinel=-1, meaning="all")

# (pattern, range): fnmatch patterns over the full dotted path ('*' also matches dots), most specific
# first, as the first match decides. For a tuple field (data.buckets) the range applies to each element.
RANGE_RULES: tuple[tuple[str, Range], ...] = (
    # Fields whose 0 (or -1) means "use the default" must come before the generic rules they would match.
    ("gan.fake_batch_size", NON_NEGATIVE),  # 0 = the task's batch size
    ("gan.min_labeled_per_batch", AT_LEAST_ONE),
    ("gan.labeled_fraction", Range(0, 1, low_open=True)),
    ("gan.leaky_slope", DROPOUT),
    ("gan.g_layers", NON_NEGATIVE),
    ("gan.d_layers", AT_LEAST_ONE),  # feature matching reads D's last hidden layer
    ("gan.weights.*", NON_NEGATIVE),
    ("parallel.num_processes", NON_NEGATIVE),  # 0 = from the environment
    ("parallel.process_id", Range(0, sentinel=-1, meaning="from the environment")),
    ("mesh.shape", Range(1, sentinel=-1, meaning="all the remaining devices")),
    ("data.sick_split", PROBABILITY),
    ("data.buckets", AT_LEAST_ONE),
    ("data.heldout_fraction", OPEN_FRACTION),
    ("data.short_seq_prob", PROBABILITY),
    ("data.max_train_examples", EXAMPLE_CAP),
    ("data.max_eval_examples", EXAMPLE_CAP),
    ("data.prefetch", NON_NEGATIVE),  # 0 = batches built in the loop's thread
    ("data.pack_groups", NON_NEGATIVE),  # 0 = one row group a data-parallel device
    ("data.pack_max_dropped", Range(0, 1, high_open=True)),  # a share of a task's examples
    ("profile_steps", NON_NEGATIVE),  # (first step, count); count 0 = off
    ("decode.null_threshold", ANY_FINITE),
    ("tasks.*.label_min", ANY_FINITE),
    ("tasks.*.label_max", ANY_FINITE),
    ("tasks.*.mask_rate", OPEN_FRACTION),
    ("tasks.*.layer", AT_LEAST_ONE),  # checked against the encoder's depth once the model is known
    ("eval_every", NON_NEGATIVE),  # 0 = at the end only
    ("eval_every_epochs", NON_NEGATIVE),  # 0 = off (eval_every decides)
    ("num_epochs", NON_NEGATIVE),  # 0 = off (num_steps decides)
    ("optim.head_learning_rate", NON_NEGATIVE),  # 0 = optim.learning_rate
    ("optim.accumulation_steps", AT_LEAST_ONE),
    # Generic rules, by leaf name.
    ("*learning_rate", POSITIVE),
    ("*warmup_fraction", PROBABILITY),
    ("*dropout", DROPOUT),
    ("*weight_decay", NON_NEGATIVE),
    ("*clip_norm", NON_NEGATIVE),  # 0 = off
    ("*weight", NON_NEGATIVE),
    ("*batch_size", AT_LEAST_ONE),
    ("*_every", AT_LEAST_ONE),
    ("*num_steps", AT_LEAST_ONE),
    ("*keep_checkpoints", AT_LEAST_ONE),
    ("*seed", NON_NEGATIVE),
    ("*num_classes", AT_LEAST_ONE),
    ("*_width", NON_NEGATIVE),  # 0 = the encoder's width
    ("*shared_dim", NON_NEGATIVE),  # 0 = the encoder's hidden size
    ("*shared_layers", NON_NEGATIVE),
    ("*_size", AT_LEAST_ONE),  # hidden_size, intermediate_size
    ("*_dim", AT_LEAST_ONE),  # noise_dim
    ("*num_heads", AT_LEAST_ONE),
    ("*num_layers", AT_LEAST_ONE),
    ("*_length", AT_LEAST_ONE),  # max_length, max_query_length, max_answer_length
    ("*stride", AT_LEAST_ONE),
    ("*n_best", AT_LEAST_ONE),
    ("*max_predictions", AT_LEAST_ONE),
    ("*collapse_*", AT_LEAST_ONE),
)


def rule_for(path: str) -> Range | None:
    """The range of the field at dotted `path` (first matching rule), or None when no rule matches."""
    for pattern, valid in RANGE_RULES:
        if fnmatch.fnmatchcase(path, pattern):
            return valid
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_fields(config: ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every numeric leaf, and of every tuple/list of numbers, in `config`."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ConfigDict):
            yield from numeric_fields(value, f"{path}.")
        elif is_number(value) or (isinstance(value, (tuple, list)) and value and all(map(is_number, value))):
            yield path, value


def check_ranges(config: ConfigDict) -> None:
    """Raises ConfigError for the first numeric field outside its range, e.g.
    `config.optim.learning_rate = -0.1; expected > 0`. Fields no rule names are left alone."""
    for path, value in numeric_fields(config):
        valid = rule_for(path)
        if valid is None:
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if not valid.contains(item):
                raise ConfigError(f"config.{path} = {value!r}; expected {valid.describe()}"
                                  + (" for each element" if isinstance(value, (tuple, list)) else ""))
