"""Answer schemas: what a task's answer looks like, the regex that constrains decoding to it,
and the parser that turns the raw text into typed values.

A schema is data plus a few methods; tasks in `emoray.tasks` pick one. Every schema has a
constraint regex, strict enough that any string it accepts parses; a schema whose answer is one of
a few classes also lists them (`candidates`), so the engine can constrain it as a choice or score
the candidates from log-probabilities instead (`EngineConfig.constraint`, figures in
docs/performance.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol


class ParseError(ValueError):
    """The model's answer does not match the task's answer schema."""


@dataclass(frozen=True)
class Parsed:
    """Typed values of one answer, matching the annotation table's columns."""

    score: float | None = None
    label: str | None = None
    labels: list[str] | None = None


class AnswerSchema(Protocol):
    kind: str
    discrete: bool
    """Answers are classes (an answer equal to the gold one is right), so the confidence of an
    answer is the probability that it is right and can be calibrated."""

    def regex(self) -> str: ...

    def max_chars(self) -> int: ...

    def candidates(self) -> tuple[str, ...] | None:
        """Every answer the constraint admits, when they are few (classes); else None."""
        ...

    def parse(self, raw: str) -> Parsed: ...


def _escape(literal: str) -> str:
    """Escape regex metacharacters only (re.escape also escapes spaces and '-', which some
    grammar compilers reject)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", literal)


_NUMBER = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Regression:
    """A real number in [low, high]; decoding allows up to `decimals` digits after the point."""

    low: int
    high: int
    decimals: int = 3
    kind: str = "regression"
    discrete: bool = False

    def regex(self) -> str:
        frac = rf"(\.[0-9]{{1,{self.decimals}}})?"
        top = rf"(\.0{{1,{self.decimals}}})?"
        parts = []
        for whole in range(self.low, self.high):
            # a negative value in (whole, whole + 1] is written "-k.xxx" with k = |whole + 1|
            parts.append(f"-{abs(whole + 1)}{frac}" if whole < 0 else f"{whole}{frac}")
        if self.high >= 0:
            parts.append(f"{self.high}{top}")
        if self.low < 0:
            parts.append(f"-{abs(self.low)}{top}")
        return "(" + "|".join(parts) + ")"

    def max_chars(self) -> int:
        width = max(len(str(self.low)), len(str(self.high)))
        return width + 1 + self.decimals

    def candidates(self) -> None:
        return None

    def parse(self, raw: str) -> Parsed:
        m = _NUMBER.match(raw)
        if not m:
            raise ParseError(f"no number in {raw!r}")
        value = float(m.group(1))
        if not self.low <= value <= self.high:
            raise ParseError(f"{value} outside [{self.low}, {self.high}]")
        return Parsed(score=value)

    @property
    def place(self) -> float:
        """Place value of the answer's leading digit: about ten steps across the range (0.1
        for [0, 1], 1 for [1, 5] and [-4, 4])."""
        return 10.0 ** round(math.log10((self.high - self.low) / 10))

    def grid(self) -> list[tuple[float, str]]:
        """The values in [low, high] at `place` steps, each with the leading characters an
        answer in its step starts with (`0.7` for 0.7 to 0.799 on [0, 1])."""
        decimals = max(0, -round(math.log10(self.place)))
        steps = round((self.high - self.low) / self.place)
        values = [round(self.low + i * self.place, decimals) + 0.0 for i in range(steps + 1)]
        return [(v, f"{v:.{decimals}f}") for v in values]

    def _next(self) -> dict[str, set[str]]:
        """For each start of a grid string, the characters that may follow it there."""
        out: dict[str, set[str]] = {}
        for _, s in self.grid():
            for j in range(len(s)):
                out.setdefault(s[:j], set()).add(s[j])
        return out

    def heads(self) -> list[str]:
        """The answer starts after which the model chooses among several characters (sign or
        digit): the probabilities `distribution` needs."""
        return sorted(h for h, chars in self._next().items() if len(chars) > 1)

    def distribution(self, branches: dict[str, dict[str, float]]) -> dict[float, float] | None:
        """Probability of each grid value from `branches` (for each of `heads()`, the model's
        probability of each next character), renormalised at each head over the characters
        a grid value continues with; None when a head is missing or has no probability."""
        following = self._next()
        out = {}
        for value, s in self.grid():
            p = 1.0
            for j in range(len(s)):
                options = following[s[:j]]
                if len(options) > 1:
                    probs = branches.get(s[:j])
                    total = sum(probs.get(c, 0.0) for c in options) if probs else 0.0
                    if not total:
                        return None
                    p *= probs.get(s[j], 0.0) / total
            out[value] = p
        return out

    def spread(self, raw: str, branches: dict[str, dict[str, float]]
               ) -> tuple[float, float] | None:
        """(expected score, confidence) of answer `raw` from the grid `distribution`: the
        probability-weighted score (each grid value keeps the answer's digits after the
        leading place, so an answer given with certainty keeps its value), and the
        probability within one place of the answer (±0.1 on [0, 1]). None when the
        distribution is not known."""
        dist = self.distribution(branches)
        if dist is None:
            return None
        score = self.parse(raw).score
        sign = -1.0 if score < 0 else 1.0
        step = math.floor(abs(score) / self.place + 1e-9) * self.place
        rest = abs(score) - step
        expected = sum(p * (v + (-rest if v < 0 else rest)) for v, p in dist.items())
        near = sum(p for v, p in dist.items() if abs(v - sign * step) <= self.place * 1.0001)
        return min(max(expected, self.low), self.high), near


@dataclass(frozen=True)
class Ordinal:
    """One of a few integer classes with names; decoding emits only the class number (the
    trained answer continues with a fixed description, which carries no extra decision)."""

    classes: dict[int, str]
    kind: str = "ordinal"
    discrete: bool = True

    def regex(self) -> str:
        return "(" + "|".join(_escape(c) for c in self.candidates()) + ")"

    def max_chars(self) -> int:
        return max(len(str(k)) for k in self.classes)

    def candidates(self) -> tuple[str, ...]:
        return tuple(str(k) for k in sorted(self.classes, reverse=True))

    def parse(self, raw: str) -> Parsed:
        m = re.match(r"\s*([-+]?\d+)(?![\d.])", raw)
        if not m or int(m.group(1)) not in self.classes:
            raise ParseError(f"no class of {sorted(self.classes)} in {raw!r}")
        value = int(m.group(1))
        return Parsed(score=float(value), label=self.classes[value])


@dataclass(frozen=True)
class MultiLabel:
    """A neutral answer, or a comma list of labels. Decoding emits labels in catalog order
    without repeats; parsing accepts any order and returns catalog order."""

    labels: tuple[str, ...]
    neutral: str = "neutral"
    neutral_answer: str = "neutral"
    terminator: str = ""
    combinable_neutral: bool = False
    kind: str = "multilabel"
    discrete: bool = True

    def _vocabulary(self) -> tuple[str, ...]:
        return self.labels + ((self.neutral_answer,) if self.combinable_neutral else ())

    def regex(self) -> str:
        vocab = [_escape(x) for x in self._vocabulary()]
        starts = []
        for i, first in enumerate(vocab):
            starts.append(first + "".join(f"(, {later})?" for later in vocab[i + 1:]))
        options = [_escape(self.neutral_answer)] if not self.combinable_neutral else []
        body = "(" + "|".join(options + starts) + ")"
        return body + _escape(self.terminator)

    def max_chars(self) -> int:
        vocab = self._vocabulary()
        longest = max(sum(len(x) for x in vocab) + 2 * (len(vocab) - 1), len(self.neutral_answer))
        return longest + len(self.terminator)

    def candidates(self) -> None:
        return None

    def parse(self, raw: str) -> Parsed:
        text = raw.strip()
        if self.terminator and text.endswith(self.terminator):
            text = text[: -len(self.terminator)]
        items = [x.strip().lower() for x in text.split(",")]
        if items == [self.neutral_answer]:
            return Parsed(labels=[self.neutral])
        known = {x: x for x in self.labels}
        known[self.neutral_answer] = self.neutral
        unknown = [x for x in items if x not in known]
        if unknown or not items:
            raise ParseError(f"unknown labels {unknown} in {raw!r}")
        found = {known[x] for x in items}
        order = list(self.labels) + [self.neutral]
        return Parsed(labels=[x for x in order if x in found])
