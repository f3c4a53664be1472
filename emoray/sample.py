"""The sample dataset shipped with emoray: 599 texts drawn from the AEB test sets (see
emoray/data/README.md for their licences), used by the demo and to train the tiny tokenizer."""

from __future__ import annotations

import json
from importlib import resources


def sample_texts() -> list[tuple[str, str]]:
    """(id, text) pairs of the shipped sample."""
    lines = resources.files("emoray.data").joinpath("sample_texts.jsonl").read_text("utf-8")
    return [(r["id"], r["text"]) for r in map(json.loads, lines.splitlines())]
