"""What every engine is: a model behind `generate(tasks, texts, targets) -> [Generation]`, with
the per-task decoding settings of its `EngineConfig`. The parts both engines share live here
once: the model's spec, the prompt fitter, other decoding settings over the same weights
(`variant`), a class task's candidate token paths (`candidates`), and a regression answer's
confidence and expected score from its digit distributions (`with_spread`). Each engine writes
only its model-specific steps: loading (`_load`), tokenizing a class (`_class_paths`) and
generating."""

from __future__ import annotations

import copy
import sys
from dataclasses import replace

from emoray.answers import ParseError
from emoray.config import Decoding, EngineConfig
from emoray.engines.scoring import Candidates, Generation
from emoray.models import resolve_model
from emoray.prompting import PromptFitter
from emoray.tasks import Task


class Engine:
    """One loaded model plus the per-task decoding settings; subclasses load and generate."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.model = resolve_model(config.model)
        self._load()
        self._reset_decoding()

    def _load(self) -> None:
        """Load the model; set `self.tokenizer` (the prompt fitter counts in its tokens)."""
        raise NotImplementedError

    def generate(self, tasks: list[Task], texts: list[str], targets: list[str | None]
                 ) -> list[Generation]:
        """Answer each (task, text, target); a row the engine rejects gets a failed
        `Generation` with the reason and the others still run."""
        raise NotImplementedError

    def _class_paths(self, task: Task) -> dict[tuple[int, ...], str] | None:
        """The task's classes as the token ids the model would generate for each, or None
        when they cannot be scored apart (the engine says why)."""
        raise NotImplementedError

    def _reset_decoding(self) -> None:
        """Empty the caches derived from the decoding settings (subclasses add theirs)."""
        self._decodings: dict[str, Decoding] = {}
        self._candidates: dict[str, Candidates | None] = {}
        self.fitter = PromptFitter.for_model(self.config, self.model, self.tokenizer)

    def variant(self, **settings) -> Engine:
        """This engine (the same loaded model) with other decoding settings, e.g.
        `constrained=False`; the benchmark compares them side by side."""
        other = copy.copy(self)
        other.config = self.config.model_copy(update=settings)
        other._reset_decoding()
        return other

    def decoding(self, task: Task) -> Decoding:
        """How `task` is decoded and scored under this engine's settings, decided once
        (`EngineConfig.decoding`, which the task's prompt version hashes too)."""
        if task.name not in self._decodings:
            self._decodings[task.name] = self.config.decoding(task)
        return self._decodings[task.name]

    def candidates(self, task: Task) -> Candidates | None:
        """The task's classes as token paths when they are scored (`constraint: logprobs`);
        None for other tasks, or when a class's path is unusable (`_class_paths`) or a prefix
        of another's: that task is then constrained by its grammar."""
        if task.name not in self._candidates:
            self._candidates[task.name] = paths = None  # kept should the tokenizer fail
            if self.decoding(task).method == "logprobs":
                paths = self._class_paths(task)
            if paths and any(a != b and b[:len(a)] == a for a in paths for b in paths):
                print(f"emoray: a class of task {task.name} is a token prefix of another; "
                      "constraining that task by grammar instead", file=sys.stderr)
                paths = None
            self._candidates[task.name] = Candidates(paths) if paths else None
        return self._candidates[task.name]

    def with_spread(self, task: Task, generation: Generation,
                    branches: dict[str, dict[str, float]]) -> Generation:
        """`generation` with its regression confidence and, for an `expected_score` task, its
        expected score (`Regression.spread` over the digit distributions `branches`); none
        where the answer does not parse or is missing."""
        try:
            spread = (task.answer.spread(generation.raw_output, branches)
                      if generation.raw_output else None)
        except ParseError:
            spread = None
        expected = spread[0] if spread and self.decoding(task).expected else None
        return replace(generation, confidence=spread[1] if spread else None, expected=expected)
