"""The run's counters, one Ray actor per run: rows read, prompts sent, tokens, engine starts
and time lines, the budget's meter; named `emoray-stats-<run_id>` so a watcher (`emoray runs`,
progress) can read a live run."""

from __future__ import annotations

import time
from collections import Counter

from emoray import budget


class RunStats:
    """Ray actor collecting counters from the stages (rows read, prompts sent, tokens); named
    `emoray-stats-<run_id>` so a watcher can read a live run's progress."""

    def __init__(self, meter: budget.Meter | None = None):
        self.counts: Counter = Counter()
        self.first: dict[str, float] = {}
        self.failed: str | None = None
        self.starts: list[float] = []
        self.clocks: dict[str, dict] = {}
        self.meter = meter
        self.spent: str | None = None

    def admit(self) -> bool:
        """Whether a batch may go to an engine: the run's budget (`meter`) is not yet spent.
        Once it is, no batch is admitted again; `budget_spent` says which cap."""
        if self.spent is None and self.meter is not None:
            self.spent = self.meter.reached(self.counts["prompt_tokens"], self.starts)
        return self.spent is None

    def budget_spent(self) -> str | None:
        return self.spent

    def actor_started(self, at: float) -> None:
        """An engine actor came up (it holds its devices from now to the end of its wave)."""
        self.starts.append(at)

    def actor_starts(self) -> list[float]:
        return list(self.starts)

    def engine_clock(self, actor: str, clock: dict) -> None:
        """An engine actor's latest time line (`engines.stage.EngineClock`), replacing its last."""
        self.clocks[actor] = clock

    def engine_clocks(self) -> dict[str, dict]:
        return dict(self.clocks)

    def engine_failed(self, message: str) -> None:
        """An engine could not start (`engine.start_failure`); the first one is kept."""
        self.failed = self.failed or message

    def failure(self) -> str | None:
        return self.failed

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def mark(self, event: str) -> None:
        """Record when `event` (e.g. `first_prompt`) first happened (epoch seconds)."""
        self.first.setdefault(event, time.time())

    def get(self) -> dict:
        return dict(self.counts)

    def marks(self) -> dict[str, float]:
        return dict(self.first)

