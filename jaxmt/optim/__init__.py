"""Optimizer transforms for jaxmt."""

from jaxmt.optim.pcgrad import (
    PCGradState,
    find_pcgrad_state,
    pcgrad,
    pcgrad_diagnostics,
    projection_coefficients,
    task_orders,
)

__all__ = [
    "PCGradState",
    "find_pcgrad_state",
    "pcgrad",
    "pcgrad_diagnostics",
    "projection_coefficients",
    "task_orders",
]
