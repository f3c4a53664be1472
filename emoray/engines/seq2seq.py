"""The Transformers engine: the encoder-decoder EmoLLMs (Emot5-large, Emobart-large), which vLLM
no longer serves, behind the vLLM engine's interface (`generate` gives one `Generation` per row)
and semantics, so the pipeline, plan, table and evaluation need not know which engine ran.

- Greedy decoding. The checkpoint's own generation settings (Emobart-large asks for 4 beams and
  bans repeated 3-grams) are set aside: a labeling job wants the one most probable answer
  under the task's constraint. Its decoder start is kept (`</s>` then a forced `<s>` for BART).
- Answers constrained by xgrammar's Transformers logits processor, compiled from each task's
  answer regex; class tasks (`constraint: logprobs`) generate nothing: one teacher-forced
  decoder pass over the encoded prompt reads the log-probabilities at every prefix of the
  candidate classes, and `scoring.walk` picks and scores as the vLLM engine does.
- Regression confidence is the vLLM engine's (`Regression.spread`), each answer start read by
  one teacher-forced decoder step.
- Status truncated when the prompt exceeds the encoder's positions (`ModelSpec.encoder_limit`).
- Rows grouped by task and sorted by length, in batches of at most `BATCH_TOKENS` prompt
  tokens; bf16 on GPUs, fp32 on CPUs (`EngineConfig.dtype` other than auto overrides);
  no gradient tracking.
"""

from __future__ import annotations

import math

from emoray.answers import Regression
from emoray.engines.base import Engine
from emoray.engines.scoring import Candidates, Generation, number_vocabulary, walk
from emoray.tasks import Task

BATCH_TOKENS, BATCH_ROWS = 16384, 256
"""Padded prompt tokens and rows per forward pass: bounds activation memory (a batch's
decoder pass holds rows x prefixes x vocabulary log-probabilities)."""


class Seq2SeqEngine(Engine):
    """One Transformers encoder-decoder model plus the per-task decoding settings."""

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in each actor's log
        config = self.config
        gpu = config.device != "cpu" and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        dtype = (getattr(torch, config.dtype) if config.dtype != "auto"
                 else torch.bfloat16 if gpu else torch.float32)
        self.net = AutoModelForSeq2SeqLM.from_pretrained(self.model.source, dtype=dtype)
        self.net.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model.source)
        generation, checkpoint = self.net.generation_config, self.net.config
        start = generation.decoder_start_token_id
        self.start = [checkpoint.decoder_start_token_id if start is None else start]
        if generation.forced_bos_token_id is not None:
            self.start.append(generation.forced_bos_token_id)
        eos = generation.eos_token_id
        self.eos = eos[0] if isinstance(eos, list) else eos
        self.pad = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                    else checkpoint.pad_token_id)

    def _reset_decoding(self) -> None:
        """Also the compiled grammars and the digit indexes."""
        super()._reset_decoding()
        self._grammars: dict[str, object] = {}
        self._digits: dict[bool, dict[str, object]] = {}

    def _class_paths(self, task: Task) -> dict[tuple[int, ...], str]:
        """Each class's decoder token ids."""
        return {tuple(self.tokenizer(c, add_special_tokens=False)["input_ids"]): c
                for c in task.answer.candidates()}

    def _grammar(self, task: Task):
        if task.name not in self._grammars:
            import xgrammar

            if not self._grammars:
                info = xgrammar.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.net.config.vocab_size,
                    stop_token_ids=[self.eos])
                self._compiler = xgrammar.GrammarCompiler(info)
            self._grammars[task.name] = self._compiler.compile_regex(task.answer.regex())
        return self._grammars[task.name]

    def generate(self, tasks: list[Task], texts: list[str], targets: list[str | None]
                 ) -> list[Generation]:
        """Answer each (task, text, target); a batch that fails is retried row by row, so a
        row the model cannot take gets its own error and the others still run."""
        if not tasks:
            return []
        fitted = [self.fitter.cut_to_fit(t, x, g) for t, x, g in zip(tasks, texts, targets)]
        ids = self.tokenizer([p for p, _ in fitted], add_special_tokens=True)["input_ids"]
        results: list[Generation | None] = [None] * len(tasks)
        groups: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            groups.setdefault(task.name, []).append(i)
        for rows in groups.values():
            task = tasks[rows[0]]
            for batch in _batches(sorted(rows, key=lambda i: len(ids[i])), ids):
                try:
                    done = self._run(task, [ids[i] for i in batch], [fitted[i][1] for i in batch])
                except Exception:  # isolate the row(s) at fault
                    done = [self._one(task, ids[i], fitted[i][1]) for i in batch]
                for i, g in zip(batch, done):
                    results[i] = g
        return results

    def _one(self, task: Task, ids: list[int], cut: bool) -> Generation:
        try:
            return self._run(task, [ids], [cut])[0]
        except Exception as e:  # the engine's own error, kept on the row
            return Generation(None, truncated=cut, error=f"{type(e).__name__}: {e}")

    def _run(self, task: Task, ids: list[list[int]], cut: list[bool]) -> list[Generation]:
        import torch

        with torch.inference_mode():
            inputs, mask = self._padded(ids, self.pad)
            encoded = self.net.get_encoder()(input_ids=inputs, attention_mask=mask)
            candidates = self.candidates(task)
            if candidates is not None:
                return self._scored(task, candidates, encoded, mask, ids, cut)
            results = self._decoded(task, encoded, mask, ids, cut)
            if self.decoding(task).confidence and isinstance(task.answer, Regression):
                results = self._spread(task, encoded, mask, results)
            return results

    def _padded(self, rows: list[list[int]], pad: int):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _next_logprobs(self, encoded, mask, prefixes: list[tuple[int, ...]]):
        """Log-probabilities [rows, prefixes, vocabulary] of the decoder's next token after each
        of `prefixes` (answer tokens after the decoder start), teacher-forced on every row's
        encoded prompt in one pass."""
        import torch

        rows, n = mask.shape[0], len(prefixes)
        decoder, decoder_mask = self._padded([self.start + list(p) for p in prefixes], self.pad)
        last = decoder_mask.sum(1) - 1
        logits = self.net(
            encoder_outputs=(encoded.last_hidden_state.repeat_interleave(n, 0),),
            attention_mask=mask.repeat_interleave(n, 0),
            decoder_input_ids=decoder.repeat(rows, 1),
            decoder_attention_mask=decoder_mask.repeat(rows, 1)).logits
        picked = logits.view(rows, n, *logits.shape[1:])[:, torch.arange(n), last]
        return torch.log_softmax(picked.float(), -1)

    def _scored(self, task: Task, candidates: Candidates, encoded, mask, ids, cut
                ) -> list[Generation]:
        prefixes = sorted({p[:k] for p in candidates.paths for k in range(len(p))},
                          key=lambda p: (len(p), p))
        tokens = sorted({t for p in candidates.paths for t in p})
        logprobs = self._next_logprobs(encoded, mask, prefixes)[:, :, tokens].tolist()
        results, confident = [], self.decoding(task).confidence
        for row, lp in enumerate(logprobs):
            at = {p: dict(zip(tokens, lp[j])) for j, p in enumerate(prefixes)}
            answer, score, n = walk(candidates, at.__getitem__)
            results.append(Generation(
                answer, math.exp(score) if confident else None, cut[row], None,
                "stop", len(ids[row]), n))
        return results

    def _decoded(self, task: Task, encoded, mask, ids, cut) -> list[Generation]:
        """Greedy answers, under the task's grammar when constrained; confidence the product of
        the probabilities of the tokens taken (EOS included) over the tokens the grammar
        allowed at each step: vLLM's cumulative log-probability, whose logits are masked by
        the grammar before they are read."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput
        from xgrammar.contrib.hf import LogitsProcessor

        rows = mask.shape[0]
        processors = ([LogitsProcessor([self._grammar(task)] * rows)]
                      if self.decoding(task).constrained else [])
        out = self.net.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded.last_hidden_state),
            attention_mask=mask,
            decoder_input_ids=torch.tensor([self.start] * rows, device=self.device),
            generation_config=GenerationConfig(
                max_new_tokens=task.max_tokens, do_sample=False, num_beams=1,
                eos_token_id=self.eos, pad_token_id=self.pad,
                decoder_start_token_id=self.start[0], output_scores=True,
                return_dict_in_generate=True),
            logits_processor=LogitsProcessorList(processors))
        taken = out.sequences[:, len(self.start):]
        logprobs = torch.log_softmax(torch.stack(out.scores, 1).float(), -1)
        chosen = logprobs.gather(2, taken[:, :logprobs.shape[1], None])[:, :, 0].tolist()
        results, confident = [], self.decoding(task).confidence
        for row, tokens in enumerate(taken.tolist()):
            end = tokens.index(self.eos) + 1 if self.eos in tokens else len(tokens)
            confidence = math.exp(sum(chosen[row][:end])) if confident else None
            stopped = end <= len(tokens) and tokens[end - 1] == self.eos
            text = self.tokenizer.decode(tokens[:end - 1] if stopped else tokens[:end],
                                         skip_special_tokens=True)
            results.append(Generation(text, confidence, cut[row], None,
                                      "stop" if stopped else "length", len(ids[row]), end))
        return results

    def _digit_index(self, inside: bool) -> dict[str, object]:
        """First character → tensor of the number tokens starting with it."""
        if inside not in self._digits:
            import torch

            by_char: dict[str, list[int]] = {}
            for i, text in number_vocabulary(self.tokenizer, inside).items():
                by_char.setdefault(text[0], []).append(i)
            self._digits[inside] = {c: torch.tensor(v, device=self.device)
                                    for c, v in by_char.items()}
        return self._digits[inside]

    def _spread(self, task: Task, encoded, mask, results: list[Generation]
                ) -> list[Generation]:
        """Regression answers' confidence (and expected score, for `expected_score` tasks):
        the model's probability of each next number character after each answer start, read in
        one decoder pass."""
        answer: Regression = task.answer
        heads = answer.heads()
        prefixes = [tuple(self.tokenizer(h, add_special_tokens=False)["input_ids"])
                    for h in heads]
        probs = self._next_logprobs(encoded, mask, prefixes).exp()
        out = []
        for row, g in enumerate(results):
            branches = {}
            for j, head in enumerate(heads):
                index = self._digit_index(inside=bool(head))
                branches[head] = {c: float(probs[row, j, ix].sum()) for c, ix in index.items()}
            out.append(self.with_spread(task, g, branches))
        return out


def _batches(order: list[int], ids: list[list[int]]) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by length) whose padded size fits a batch."""
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1 > BATCH_ROWS
                        or (len(current) + 1) * len(ids[i]) > BATCH_TOKENS):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches
