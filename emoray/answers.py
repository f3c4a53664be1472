"""Answer schemas: what a task's answer looks like, the regex that constrains decoding to it,
and the parser that turns the raw text into typed values.

A schema is data plus a few methods; tasks in `emoray.tasks` pick one. Every schema has a
constraint regex, strict enough that any string it accepts parses; a schema whose answer is one of
a few classes also lists them (`candidates`), so the engine can constrain it as a choice or score
the candidates from log-probabilities instead (`EngineConfig.constraint`, figures in
docs/performance.md).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Protocol


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
    column: ClassVar[str] = "score"
    """The annotation table's column that holds the parsed answer."""
    spark_type: ClassVar[str | None] = None
    """The enriched column's type when it differs from the table column's."""
    suffix: ClassVar[str] = ""
    """Added to the task name for an enriched column the registry does not name."""
    BINS: ClassVar[int] = 10

    def example(self) -> str:
        """A valid answer (the bench's no-op engine answers with it)."""
        return f"{self.low}"

    def summarize(self, values: Counter) -> dict:
        """The label report's distribution: a histogram of `BINS` bins over [low, high], with
        the mean and standard deviation."""
        n = sum(values.values())
        width = (self.high - self.low) / self.BINS
        bins = [0] * self.BINS
        for v, c in values.items():
            bins[min(int((v - self.low) / width), self.BINS - 1)] += c
        mean = sum(v * c for v, c in values.items()) / n if n else None
        var = sum(c * (v - mean) ** 2 for v, c in values.items()) / n if n else None
        edges = [round(self.low + i * width, 4) for i in range(self.BINS + 1)]
        last = self.BINS - 1
        return {"histogram": {f"[{edges[i]}, {edges[i + 1]}{']' if i == last else ')'}": bins[i]
                              for i in range(self.BINS)},
                "mean": round(mean, 4) if mean is not None else None,
                "std": round(var ** 0.5, 4) if var is not None else None}

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

    def grid(self) -> list[str]:
        """The answers' leading characters, one per `place`-wide bucket, in order, as the
        constraint writes them: `0.0` … `0.9`, `1.0` on [0, 1]; `-4`, `-3` … `-0`, `0` … `4`
        on [-4, 4] (`-3` holds -3.99 … -3, `-0` holds -0.99 … -0.01)."""
        return list(self._grid())

    @functools.cache
    def _grid(self) -> tuple[str, ...]:
        """`grid`, computed once per answer kind: every regression answer's confidence reads it."""
        k = -round(math.log10(self.place))
        if k < 0:
            raise ValueError(f"no leading-digit grid for a range as wide as [{self.low}, "
                             f"{self.high}]")
        wholes = [(f"-{abs(w + 1)}" if w < 0 else f"{w}", False)
                  for w in range(self.low, self.high)]
        wholes += [(f"{self.high}", True)] if self.high >= 0 else []
        wholes += [(f"-{abs(self.low)}", True)] if self.low < 0 else []
        buckets = []
        for whole, edge in wholes:
            if k == 0:
                buckets.append(whole)
            else:
                buckets += [f"{whole}.{d:0{k}d}" for d in ([0] if edge else range(10 ** k))]
        return tuple(sorted(dict.fromkeys(buckets), key=self._middle))

    def _middle(self, bucket: str) -> float:
        """The middle of a bucket's values (a `-k` bucket lies below -k)."""
        return float(bucket) + (-0.5 if bucket.startswith("-") else 0.5) * self.place

    def bucket(self, raw: str) -> str | None:
        """The grid bucket of answer `raw` (`0.7` for `0.731`, `1.0` for `1`), or None."""
        text = raw.strip()
        k = -round(math.log10(self.place))
        whole, _, frac = text.partition(".")
        lead = whole + (("." + (frac + "0" * k)[:k]) if k else "")
        return lead if lead in self._grid() else None

    @functools.cache
    def _next(self) -> dict[str, frozenset[str]]:
        """For each start of a bucket string, the characters that may follow it there."""
        out: dict[str, set[str]] = {}
        for s in self._grid():
            for j in range(len(s)):
                out.setdefault(s[:j], set()).add(s[j])
        return {head: frozenset(chars) for head, chars in out.items()}

    def heads(self) -> list[str]:
        """The answer starts after which the model chooses among several characters (sign or
        digit): the probabilities `distribution` needs."""
        return sorted(h for h, chars in self._next().items() if len(chars) > 1)

    def path_heads(self, raw: str) -> list[str]:
        """The `heads()` the bucket of answer `raw` passes through (`""` and `0.` for 0.731,
        only `""` for 1.000 on [0, 1]): the choices the greedy answer itself made."""
        own = self.bucket(raw)
        return [h for h in self.heads() if own is not None and own.startswith(h)
                and len(own) > len(h)]

    def distribution(self, branches: dict[str, dict[str, float]]) -> dict[str, float] | None:
        """Probability of each grid bucket from `branches` (for each of `heads()`, the model's
        probability of each next character), renormalised at each head over the characters
        a bucket continues with; None when a head is missing or has no probability."""
        out = {}
        for s in self._grid():
            p = self._path_probability(s, branches)
            if p is None:
                return None
            out[s] = p
        return out

    def _path_probability(self, bucket: str, branches: dict[str, dict[str, float]]
                          ) -> float | None:
        """The probability of `bucket` along its heads (None when one has no probabilities)."""
        following, p = self._next(), 1.0
        for j in range(len(bucket)):
            options = following[bucket[:j]]
            if len(options) > 1:
                probs = branches.get(bucket[:j])
                total = sum(probs.get(c, 0.0) for c in options) if probs else 0.0
                if not total:
                    return None
                p *= probs.get(bucket[j], 0.0) / total
        return p

    def spread(self, raw: str, branches: dict[str, dict[str, float]]
               ) -> tuple[float | None, float] | None:
        """(expected score, confidence) of answer `raw`.

        The confidence is the probability of the answer's bucket and its two neighbours (0.6
        to 0.899 for an answer 0.731 on [0, 1]) read along the answer's own heads
        (`path_heads`): a neighbour behind a character the answer did not take (0.9 beside
        1.000, -0 beside 0.5 on [-4, 4]) counts nothing. So it needs only the choices the
        greedy decode made (no extra model step), and is the same whichever engine computed it.

        The expected score is the probability-weighted score over every bucket (each keeps the
        answer's digits after the leading place, so an answer given with certainty keeps its
        value; each value kept inside [low, high]); it needs every head, and is None without.
        None altogether when the answer's bucket or one of its own heads is not known."""
        own = self.bucket(raw)
        path = {h: branches[h] for h in self.path_heads(raw) if h in branches}
        if own is None or self._path_probability(own, path) is None:
            return None
        order = {s: i for i, s in enumerate(self._grid())}
        near = sum(self._path_probability(s, path) or 0.0 for s in self._grid()
                   if abs(order[s] - order[own]) <= 1)
        dist = self.distribution(branches)
        if dist is None:
            return None, near
        rest = abs(self.parse(raw).score) - abs(float(own))
        expected = sum(p * min(max(float(s) + (-rest if s.startswith("-") else rest),
                                   self.low), self.high) for s, p in dist.items())
        return expected, near


@dataclass(frozen=True)
class Ordinal:
    """One of a few integer classes with names; decoding emits only the class number (the
    trained answer continues with a fixed description, which carries no extra decision)."""

    classes: dict[int, str]
    kind: str = "ordinal"
    discrete: bool = True
    column: ClassVar[str] = "score"
    spark_type: ClassVar[str | None] = "int"
    suffix: ClassVar[str] = "_class"

    def example(self) -> str:
        return self.candidates()[0]

    def summarize(self, values: Counter) -> dict:
        """The label report's distribution: rows per class."""
        return {"classes": {f"{k}: {name}": values.get(float(k), 0)
                            for k, name in sorted(self.classes.items())}}

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
    column: ClassVar[str] = "labels"
    spark_type: ClassVar[str | None] = None
    suffix: ClassVar[str] = ""

    def example(self) -> str:
        return self.labels[0] + self.terminator

    def summarize(self, values: Counter) -> dict:
        """The label report's distribution: rows per label (a row counts once per label)."""
        return {"labels": {label: values.get(label, 0)
                           for label in [*self.labels, self.neutral]}}

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
