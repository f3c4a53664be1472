"""How a vLLM answer's number tokens read: the vocabulary's number tokens and their texts, an
answer's text from its token ids (when vLLM was asked not to detokenize), and the probability
of each next number character at the steps of an answer, read from vLLM's log-probabilities
(flat, `flat_logprobs`, or one dict per step). The regression confidence is built on these
(`VllmEngine._spreads`)."""

from __future__ import annotations

import functools
import math

from emoray.answers import Regression
from emoray.engines.scoring import number_vocabulary


def _flat(steps) -> bool:
    """Whether vLLM returned `steps` flat (`vllm.logprobs.FlatLogprobs`, asked for with
    `flat_logprobs`) rather than one dict per step; told by shape, so that importing this
    module does not import vLLM."""
    return hasattr(steps, "start_indices")


class NumberTokens:
    """A tokenizer's number tokens, and answers read through them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    @functools.cached_property
    def ids(self) -> list[int]:
        """The number tokens (`texts`) vLLM returns log-probabilities of: all, or when
        there are more than it takes in one request (byte-level BPE vocabularies hold hundreds
        of `25`-like tokens), the shortest ones; a longer token the model picked still counts
        (`first_chars`)."""
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        found = self.texts
        return sorted(sorted(found, key=lambda i: (len(found[i]), i))[:MAX_LOGPROB_TOKEN_IDS])

    @functools.cached_property
    def texts(self) -> dict[int, str]:
        """Every number token's text mid-answer (`number_vocabulary`): how an answer and its
        steps read without asking vLLM to decode the tokens it returns."""
        return number_vocabulary(self.tokenizer)

    def text(self, completion) -> str:
        """The answer's text: vLLM's, or its tokens' texts (`decoded`) when the request asked
        vLLM not to detokenize (constrained answers asking for the number tokens'
        log-probabilities: vLLM would decode every one of them at every step, half of a tiny
        model's time; their grammar admits no leading space, so each token reads as it does
        mid-answer)."""
        if completion.text or not completion.token_ids:
            return completion.text
        return "".join(self.decoded(t) for t in completion.token_ids)

    def branches(self, answer: Regression, output) -> dict[str, dict[str, float]]:
        """The model's probability of each next number character after each of the answer
        starts `answer.heads()` that the generated answer went through (the steps whose token
        starts at such a point). Only those steps' log-probabilities are read: vLLM returns
        them flat (`flat_logprobs`), and a step read is a step's worth of Python objects."""
        completion = output.outputs[0]
        heads, branches, text = set(answer.heads()), {}, ""
        steps = completion.logprobs or []
        for position, token in enumerate(completion.token_ids[:len(steps)]):
            if text in heads:
                branches[text] = self.first_chars(steps, position)
            text += self.token_text(token, steps, position)
        return branches

    def token_text(self, token: int, steps, position: int) -> str:
        """The text the answer's token at `position` adds: vLLM's decoding where it decoded
        (free text keeps its spaces), else the number token's own, else the tokenizer's."""
        if _flat(steps):  # the sampled token comes first at each step
            picked = steps.decoded_tokens[steps.start_indices[position]]
        else:
            picked = steps[position][token].decoded_token
        return picked if picked is not None else self.decoded(token)

    def decoded(self, token: int) -> str:
        """A token's text mid-answer: the number token's own, else the tokenizer's (`.`),
        decoded once per token id."""
        if token not in self._texts:
            self._texts[token] = (self.texts.get(token) or self.tokenizer.decode(
                [token], skip_special_tokens=True))
        return self._texts[token]

    def first_chars(self, steps, position: int) -> dict[str, float]:
        """The log-probabilities of the number tokens (those asked for, and the one picked) at
        step `position` of `steps` (vLLM's flat or per-step log-probabilities), as probability
        per first character."""
        if _flat(steps):  # the sampled token comes first, and again among those asked for
            lo, hi = steps.start_indices[position], steps.end_indices[position]
            pairs = dict(zip(steps.token_ids[lo:hi], steps.logprobs[lo:hi])).items()
        else:
            pairs = ((i, lp.logprob) for i, lp in steps[position].items())
        probs: dict[str, float] = {}
        for i, logprob in pairs:
            text = self.texts.get(i)
            if text:
                probs[text[0]] = probs.get(text[0], 0.0) + math.exp(logprob)
        return probs
