"""What an engine gives back per row (`Generation`) and the scoring rules both engines share:
a class task's candidate answers as token paths and the constrained greedy walk over them, and
the number tokens a regression answer's digits are read from."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    raw_output: str | None
    confidence: float | None = None
    truncated: bool = False
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    expected: float | None = None
    """A regression answer's expected value (`Regression.spread`), when its task is scored so
    (`EngineConfig.expected_score`)."""


@dataclass(frozen=True)
class Candidates:
    """A class task's candidate answers as token paths, in the context they follow."""

    paths: dict[tuple[int, ...], str]

    def next_tokens(self, prefix: tuple[int, ...]) -> list[int]:
        n = len(prefix)
        return sorted({p[n] for p in self.paths if len(p) > n and p[:n] == prefix})


def logsumexp(values) -> float:
    values = list(values)
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


NUMBER_START, NUMBER_CHARS = set("0123456789-"), set("0123456789-.")


def number_vocabulary(tokenizer, inside: bool = True) -> dict[int, str]:
    """Token id → text of the tokens written in a number's characters only and starting with a
    digit or a sign: the alternatives at each digit of a regression answer (`Regression.heads`).
    `inside`: as each reads after another token (mid-answer); else as it reads at the start of
    a decoded sequence (SentencePiece drops a leading `▁` there)."""
    anchor = tokenizer.encode("a", add_special_tokens=False)[-1:] if inside else []
    base = tokenizer.decode(anchor)
    found = {}
    for token, i in tokenizer.get_vocab().items():
        if any(c.isdigit() or c == "-" for c in token):
            text = tokenizer.decode(anchor + [i])[len(base):]
            if text and text[0] in NUMBER_START and set(text) <= NUMBER_CHARS:
                found[i] = text
    return found


def walk(candidates: Candidates, step) -> tuple[str, float, int]:
    """Grammar-constrained greedy decoding over a class task's candidate paths: at each prefix
    the most probable next token among those continuing a candidate (`step(prefix)`: token →
    log-probability), its probability renormalised over them. Returns (answer,
    log-probability, tokens)."""
    prefix, score = (), 0.0
    while prefix not in candidates.paths:
        logprobs = step(prefix)
        options = {t: logprobs[t] for t in candidates.next_tokens(prefix)}
        token = max(options, key=options.get)
        score += options[token] - logsumexp(options.values())
        prefix += (token,)
    return candidates.paths[prefix], score, len(prefix)
