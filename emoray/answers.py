"""Answer schemas: what a task's answer looks like, the regex that constrains decoding to it,
and the parser that turns the raw text into typed values.

A schema is data plus a few methods; tasks in `emoray.tasks` pick one. Every schema has a
constraint regex, strict enough that any string it accepts parses; a schema whose answer is one of
a few classes also lists them (`candidates`), so the engine can constrain it as a choice or score
the candidates from log-probabilities instead (`EngineConfig.constraint`, figures in
docs/performance.md).
"""

from __future__ import annotations

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
