"""A run's progress, on stderr: a live tqdm bar on a terminal, one plain line every
`interval_s` seconds otherwise (log files, CI, `ray job logs`), where a bar's carriage returns
would pile up into one unreadable line.

The driver counts the rows it commits; the run's counters (`pipeline.RunStats`) give the rows
read and, once planning is done, how many rows the run will write. A background thread keeps
the display moving while the driver waits for its first batch (planning, engine start-up).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Callable, TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Context manager around a run's write loop; `add(batch_rows, statuses)` per batch.

    `poll()` returns the run's counters (`rows_in`, `pairs`, `already_held`, `prompts`,
    `engine_starts`); it is called from the display thread, so it must be thread-safe."""

    def __init__(self, poll: Callable[[], dict], interval_s: float = 30,
                 stream: TextIO | None = None, tty: bool | None = None, waves: int = 1):
        self.poll = poll
        self.waves, self.wave, self._wave_rows = waves, 0, 0
        self._wave_engine = (0, 0)  # (prompts, engine_starts) when this wave began
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.rows = 0
        self.statuses: Counter = Counter()
        self.counts: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emoray-progress", daemon=True)
        self._bar = None
        self._note: str | None = None
        self._t0 = self._first = time.monotonic()

    def __enter__(self) -> Progress:
        if self.interval_s > 0:
            if self.tty:
                from tqdm import tqdm

                self._bar = tqdm(total=None, unit=" rows", file=self.stream, dynamic_ncols=True,
                                 desc="planning")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._bar is not None:
            self._refresh_bar()
            self._bar.close()

    def next_wave(self) -> None:
        """The run's next wave starts: its rows are not planned and its engine not started."""
        counts = self._polled()
        with self._lock:
            self.wave += 1
            self._wave_rows = self.rows
            self.counts = counts
            self._wave_engine = self._engine()

    def _engine(self) -> tuple[int, int]:
        return self.counts.get("prompts", 0), self.counts.get("engine_starts", 0)

    def add(self, rows: int, statuses: Counter) -> None:
        with self._lock:
            if not self.rows:
                self._first = time.monotonic()
            self.rows += rows
            self.statuses.update(statuses)
            if self._bar is not None:
                self._bar.update(rows)

    def _polled(self) -> dict:
        try:
            return self.poll()
        except Exception:  # a slow or restarting counter actor: keep the last counts
            return self.counts

    def _loop(self) -> None:
        period = 1.0 if self.tty else self.interval_s
        while not self._stop.wait(period):
            self.counts = self._polled()
            if self._bar is not None:
                self._refresh_bar()
            else:
                print(self.line(), file=self.stream, flush=True)

    def total(self) -> int | None:
        """Rows the run will write, known once every input row is planned (in the last wave)."""
        c = self.counts
        if self.wave < self.waves - 1 or not (self.rows > self._wave_rows and c.get("pairs")):
            return None  # (until every partition is planned, already_held still grows)
        return max(c["pairs"] - c.get("already_held", 0), self.rows)

    def note(self, phase: str | None) -> None:
        """Name a phase the run's counters cannot show (the held check before the first wave,
        in the driver), so a stall there is visible; None: back to the counters' phase."""
        self._note = phase

    def phase(self) -> str:
        if self._note:
            return self._note
        wave = f" (wave {self.wave + 1}/{self.waves})" if self.waves > 1 else ""
        if self.rows > self._wave_rows:
            return "annotating" + wave
        if any(now > then for now, then in zip(self._engine(), self._wave_engine)):
            return "engine running" + wave  # (the counts are the night's, not the wave's)
        return "planning" + wave

    def _statuses(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))

    def _refresh_bar(self) -> None:
        with self._lock:
            bar = self._bar
            bar.set_description(self.phase(), refresh=False)
            total = self.total()
            if total is not None and bar.total != total:
                bar.total = total
            bar.set_postfix_str(self._statuses() or f"{self.counts.get('rows_in', 0)} rows read",
                                refresh=False)
            bar.refresh()

    def line(self) -> str:
        """One plain progress line."""
        with self._lock:
            elapsed = time.monotonic() - self._t0
            total = self.total()
            parts = [f"emoray: {self.phase()} {_clock(elapsed)}",
                     f"read {self.counts.get('rows_in', 0)} rows"]
            if total:
                writing = time.monotonic() - self._first
                rate = self.rows / writing if writing > 0 else 0.0
                eta = f", ETA {_clock((total - self.rows) / rate)}" if rate else ""
                parts.append(f"wrote {self.rows}/{total} ({100 * self.rows / total:.0f} %), "
                             f"{rate:.1f} rows/s{eta}")
            if self.statuses:
                parts.append(self._statuses())
            return "; ".join(parts)
