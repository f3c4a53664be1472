"""A run's budget (`budget.max_usd`, `max_device_hours`, `max_prompt_tokens`), held twice.

Before any engine starts, against the dry run's estimate: a night that would overrun it is
refused with the estimate and the budget on one line (exit code 8), so nothing is spent, unless
`budget.allow_partial`. The estimate is the cost model's (`emoray.cost`): prompt tokens counted
with the checkpoint's tokenizer, device-hours and dollars from `cost.tokens_per_s` /
`cost.gpu_hour_usd` or, on GPUs, the H100 model.

While the run runs, against what it spent (`Meter`): the prompt tokens the engines counted and
the device-seconds the engine actors held so far. Once a cap is reached no new batch goes to an
engine; the batches already sent are answered and committed, and the run ends with exit code 9
naming the pairs left (`BudgetSpent`). The next run's held check skips what was committed."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from emoray.config import BudgetConfig, ConfigError, CostConfig
from emoray.errors import EXIT_BUDGET, EXIT_BUDGET_SPENT, EmorayError


class BudgetError(EmorayError):
    """The run's estimate is over its budget; nothing was started."""

    exit_code = EXIT_BUDGET


class BudgetSpent(EmorayError):
    """The run reached its budget: what it answered is committed, the rest is left for the next
    run."""

    exit_code = EXIT_BUDGET_SPENT


def check(plan: dict, budget: BudgetConfig, cost: CostConfig) -> str | None:
    """Refuse `plan` (a dry run's) when its estimate exceeds any cap of `budget`; a cap whose
    figure the estimate cannot give is a configuration error naming the setting it needs. With
    `budget.allow_partial` neither refuses: the line saying why is returned for the run to print
    (it will stop at the budget). `plan["estimated"]`, when given, says what kind of estimate it
    is (a cascade's: a worst case)."""
    if budget.max_usd is not None and cost.gpu_hour_usd is None:
        raise ConfigError("budget.max_usd needs cost.gpu_hour_usd to count dollars: set it, or "
                          "drop budget.max_usd")
    estimate = plan.get("estimate") or {}
    figures = {"max_prompt_tokens": ("prompt tokens", plan.get("prompt_tokens"),
                                     "a tokenizer for the model"),
               "max_device_hours": ("device-hours", estimate.get("device_hours"),
                                    "cost.tokens_per_s (on CPUs) for a time estimate"),
               "max_usd": ("USD", estimate.get("cost_usd"),
                           "cost.tokens_per_s (on CPUs) for a dollar estimate")}
    over = []
    for field, (unit, value, needs) in figures.items():
        cap = getattr(budget, field)
        if cap is None:
            continue
        if value is None and budget.allow_partial:
            over.append(f"no estimate in {unit} for budget.{field} {cap} ({needs})")
        elif value is None:
            raise ConfigError(f"budget.{field} needs an estimate in {unit}, which this run "
                              f"cannot make: set {needs}, or drop budget.{field}")
        elif value > cap:
            over.append(f"{value} {unit} {plan.get('estimated', 'estimated')} > "
                        f"budget.{field} {cap}")
    if over and budget.allow_partial:
        return (f"emoray: {'; '.join(over)} ({plan['prompts']} prompts for "
                f"{plan['rows_to_write']} rows); --allow-partial: the run stops at the budget")
    if over:
        raise BudgetError(f"over budget, nothing started: {'; '.join(over)} "
                          f"({plan['prompts']} prompts for {plan['rows_to_write']} rows); "
                          "raise the budget, annotate a smaller input, or pass --allow-partial "
                          "to answer what the budget pays for")
    return None


def hold(plan: dict, config) -> None:
    """`check` of `plan` against `config`'s budget (an `AnnotateConfig`): refused, or with
    `allow_partial` the reason printed on stderr."""
    note = check(plan, config.budget, config.cost)
    if note:
        print(note, file=sys.stderr)


def check_before_run(annotator) -> None:
    """The check before an engine starts (`annotate`, `nightly`), when `annotator` (a
    `pipeline.Annotator`) has a budget: its dry run held to it (`hold`)."""
    if annotator.config.budget.is_set():
        hold(annotator.dry_run(), annotator.config)


@dataclass(frozen=True)
class Meter:
    """A run's caps against what its engines spent so far: prompt tokens, and device-seconds
    (each engine actor from its start, times the devices it holds: what the report's `usage`
    counts); dollars are device-hours times `gpu_hour_usd`."""

    budget: BudgetConfig
    devices_per_engine: int = 1
    gpu_hour_usd: float | None = None

    def reached(self, prompt_tokens: int, actor_starts: list[float],
                now: float | None = None) -> str | None:
        """Which cap the spending reached (one line), or None while within all of them."""
        now = time.time() if now is None else now
        device_hours = (sum(now - t for t in actor_starts) * self.devices_per_engine / 3600)
        return cap_reached(self.budget, prompt_tokens, device_hours, self.gpu_hour_usd)


def _spent(prompt_tokens: int, device_hours: float, gpu_hour_usd: float | None):
    """(cap field, amount spent, unit) of each cap."""
    usd = device_hours * gpu_hour_usd if gpu_hour_usd is not None else None
    return (("max_prompt_tokens", prompt_tokens, "prompt tokens"),
            ("max_device_hours", device_hours, "device-hours"), ("max_usd", usd, "USD"))


def cap_reached(budget: BudgetConfig, prompt_tokens: int, device_hours: float,
                gpu_hour_usd: float | None) -> str | None:
    """Which cap of `budget` this spending reached (one line), or None while within all."""
    for field, spent, unit in _spent(prompt_tokens, device_hours, gpu_hour_usd):
        cap = getattr(budget, field)
        if cap is not None and spent is not None and spent >= cap:
            return f"{round(spent, 4)} {unit} spent >= budget.{field} {cap}"
    return None


def left(budget: BudgetConfig, prompt_tokens: int, device_hours: float,
         gpu_hour_usd: float | None) -> BudgetConfig:
    """What `budget` leaves after this spending (no cap below 0): a run made of runs (a
    cascade's steps) holds each to what the ones before it left."""
    update = {}
    for field, spent, _ in _spent(prompt_tokens, device_hours, gpu_hour_usd):
        cap = getattr(budget, field)
        if cap is not None and spent is not None:
            update[field] = max(cap - spent, 0)
    return budget.model_copy(update=update)
