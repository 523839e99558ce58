"""The optimizer: optax AdamW with warm-up and linear decay, clipping, optional PCGrad in front."""

from __future__ import annotations

import jax
import optax
from ml_collections import ConfigDict

from jaxmt.core.rngs import stream_key

ENCODER_SCOPE = ("backbone", "encoder")  # where the multitask model keeps the pretrained encoder's params
EncoderScopes = tuple[tuple[str, ...], ...]  # param-path prefixes of the pretrained encoder


def learning_rate_schedule(config: ConfigDict, num_steps: int, peak: float | None = None) -> optax.Schedule:
    """Linear warm-up to `peak` (default `optim.learning_rate`), then linear decay to zero at `num_steps`."""
    peak = config.optim.learning_rate if peak is None else peak
    warmup = max(int(config.optim.warmup_fraction * num_steps), 1)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup),
         optax.linear_schedule(peak, 0.0, max(num_steps - warmup, 1))],
        boundaries=[warmup],
    )


def _decay_mask(params: dict) -> dict:
    """No weight decay on biases and LayerNorm scales (as BERT fine-tuning does it)."""
    def decays(path, leaf) -> bool:
        names = [str(getattr(k, "key", k)) for k in path]
        return leaf.ndim > 1 and not any("LayerNorm" in n for n in names)
    return jax.tree_util.tree_map_with_path(decays, params)


def surgery_mask(params: dict, scope: str) -> dict:
    """Which leaves take part in gradient surgery: 'all', or 'shared' (every leaf but the heads)."""
    if scope not in ("all", "shared"):
        raise ValueError(f"optim.surgery_scope must be 'all' or 'shared', got {scope!r}")
    return {key: jax.tree_util.tree_map(lambda _, take=(scope == "all" or key != "heads"): take, sub)
            for key, sub in params.items()}


def encoder_or_head(params: dict, encoder_scopes: EncoderScopes = (ENCODER_SCOPE,)) -> dict:
    """'encoder' for the pretrained encoder's leaves (paths under one of `encoder_scopes`), 'head' for the rest
    (shared layers, heads, new pre-training heads)."""
    def label(path, _) -> str:
        names = tuple(str(getattr(k, "key", k)) for k in path)
        return "encoder" if any(names[: len(scope)] == scope for scope in encoder_scopes) else "head"
    return jax.tree_util.tree_map_with_path(label, params)


def _adamw(config: ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.optim.weight_decay,
                       mask=_decay_mask)


def make_optimizer(config: ConfigDict, num_steps: int, num_tasks: int,
                   encoder_scopes: EncoderScopes = (ENCODER_SCOPE,)) -> optax.GradientTransformation:
    """optax chain: [pcgrad] -> clip by global norm -> AdamW(schedule).

    `num_tasks` is the number of gradients stacked for PCGrad (tasks, or surgery groups). With
    `optim.head_learning_rate` > 0 the AdamW is split by `encoder_or_head(params, encoder_scopes)`: the
    encoder follows `learning_rate`, everything else the same warm-up/decay shape peaking at `head_learning_rate`.
    """
    schedule = learning_rate_schedule(config, num_steps)
    head_lr = config.optim.get("head_learning_rate", 0.0)
    chain = []
    if config.optim.gradient_surgery == "pcgrad":
        from jaxmt.optim.pcgrad import pcgrad

        chain.append(pcgrad(num_tasks, reduction=config.optim.surgery_reduction,
                            seed=stream_key(config.seed, "pcgrad"),
                            mask=lambda p: surgery_mask(p, config.optim.surgery_scope)))
    elif config.optim.gradient_surgery != "none":
        raise ValueError(f"optim.gradient_surgery must be 'none' or 'pcgrad', got {config.optim.gradient_surgery!r}")
    if config.optim.clip_norm > 0:
        chain.append(optax.clip_by_global_norm(config.optim.clip_norm))
    if head_lr > 0:
        chain.append(optax.multi_transform(
            {"encoder": _adamw(config, schedule),
             "head": _adamw(config, learning_rate_schedule(config, num_steps, peak=head_lr))},
            lambda params: encoder_or_head(params, encoder_scopes)))
    else:
        chain.append(_adamw(config, schedule))
    return optax.chain(*chain)
