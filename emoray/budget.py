"""A run's budget (`budget.max_usd`, `max_device_hours`, `max_prompt_tokens`), held against the
dry run's estimate before any engine starts: a night that would overrun it is refused with the
estimate and the budget on one line (exit code 8), so nothing is spent. The estimate is the cost
model's (`emoray.cost`): prompt tokens counted with the checkpoint's tokenizer, device-hours and
dollars from `cost.tokens_per_s` / `cost.gpu_hour_usd` or, on GPUs, the H100 model."""

from __future__ import annotations

from emoray.config import BudgetConfig, ConfigError
from emoray.errors import EXIT_BUDGET, EmorayError


class BudgetError(EmorayError):
    """The run's estimate is over its budget; nothing was started."""

    exit_code = EXIT_BUDGET


def check(plan: dict, budget: BudgetConfig) -> None:
    """Refuse `plan` (a dry run's) when its estimate exceeds any cap of `budget`; a cap whose
    figure the estimate cannot give is a configuration error naming the setting it needs."""
    estimate = plan.get("estimate") or {}
    figures = {"max_prompt_tokens": ("prompt tokens", plan.get("prompt_tokens"),
                                     "a tokenizer for the model"),
               "max_device_hours": ("device-hours", estimate.get("device_hours"),
                                    "cost.tokens_per_s (on CPUs) for a time estimate"),
               "max_usd": ("USD", estimate.get("cost_usd"),
                           "cost.gpu_hour_usd (and cost.tokens_per_s on CPUs)")}
    over = []
    for field, (unit, value, needs) in figures.items():
        cap = getattr(budget, field)
        if cap is None:
            continue
        if value is None:
            raise ConfigError(f"budget.{field} needs an estimate in {unit}, which this run "
                              f"cannot make: set {needs}, or drop budget.{field}")
        if value > cap:
            over.append(f"{value} {unit} estimated > budget.{field} {cap}")
    if over:
        raise BudgetError(f"over budget, nothing started: {'; '.join(over)} "
                          f"({plan['prompts']} prompts for {plan['rows_to_write']} rows); "
                          "raise the budget or annotate a smaller input")
