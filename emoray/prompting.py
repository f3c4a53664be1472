"""Prompts as the engine sends them: a task's instruction around the text, cut to fit the
model's context (status `truncated`), counted in the model's own tokens.

Kept apart from the engine so a dry run counts exactly the prompt tokens a run would send,
with the checkpoint's tokenizer and no engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emoray.config import EngineConfig
from emoray.tasks import CONVERSATION, Task

if TYPE_CHECKING:
    from emoray.models import ModelSpec


def load_tokenizer(source: str):
    """The checkpoint's tokenizer (a local folder, or a hub id where the hub is reachable)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


class PromptFitter:
    """Builds each prompt in the model's conversation format (`wrapper`,
    `ModelSpec.prompt_format`) and cuts texts too long for `max_model_len` (with an
    `encoder_limit`, an encoder-decoder's: the prompt alone must fit the smaller of the two)."""

    def __init__(self, config: EngineConfig, tokenizer, wrapper: str = CONVERSATION,
                 encoder_limit: int | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.wrapper = wrapper
        self.encoder_limit = encoder_limit
        self._overhead: dict[tuple[str, str | None], int] = {}

    @classmethod
    def for_model(cls, config: EngineConfig, model: ModelSpec, tokenizer=None) -> PromptFitter:
        """The fitter of `model` (its conversation format and encoder limit), with its own
        tokenizer (loaded from the checkpoint unless given)."""
        if tokenizer is None:
            tokenizer = load_tokenizer(model.source)
        return cls(config, tokenizer, model.prompt_format, model.encoder_limit)

    def limit(self, task: Task) -> int:
        """Tokens a prompt may take: the context less the task's answer (decoder-only), or the
        encoder's input, whose answer the decoder holds (encoder-decoder)."""
        if self.encoder_limit:
            return min(self.config.max_model_len, self.encoder_limit)
        return self.config.max_model_len - task.max_tokens

    def prompt(self, task: Task, text: str, target: str | None) -> str:
        """The whole prompt for `text`, uncut."""
        return task.prompt(text, target, self.config.template, self.wrapper)

    def token_ids(self, text: str, special: bool = True) -> list[int]:
        """Token ids of `text` (with the model's special tokens, as the engine sends it)."""
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def cut_to_fit(self, task: Task, text: str, target: str | None) -> tuple[str, bool]:
        """The prompt for `text`, cut so prompt plus answer fit the context; (prompt, truncated).
        Only texts that could be too long are tokenized: a token holds at least one byte."""
        key = (task.name, target)
        if key not in self._overhead:
            self._overhead[key] = len(self.token_ids(self.prompt(task, "", target)))
        limit = self.limit(task)
        budget = limit - self._overhead[key] - 2
        if len(text.encode("utf-8")) <= budget:
            return self.prompt(task, text, target), False
        ids = self.token_ids(text, special=False)
        if len(ids) <= budget:
            return self.prompt(task, text, target), False
        keep = max(budget, 0)
        while True:
            prompt = self.prompt(task, self.tokenizer.decode(ids[:keep]), target)
            if len(self.token_ids(prompt)) <= limit or keep == 0:
                return prompt, True
            keep = max(keep - 8, 0)

    def prompt_tokens(self, tasks: list[Task], texts: list[str], targets: list[str | None]
                      ) -> list[int]:
        """Tokens of each fitted prompt, as the engine reports them (`prompt_tokens`)."""
        prompts = [self.cut_to_fit(t, x, g)[0] for t, x, g in zip(tasks, texts, targets)]
        if not prompts:
            return []
        return [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=True)["input_ids"]]
