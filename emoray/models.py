"""The EmoLLMs model catalog: names users may give, where the weights live, and which engine
serves them, read from the checkpoint's own config.json (its architecture), never its name.

vLLM serves the decoder-only models (LLaMA-2, OPT, BLOOM); it dropped encoder-decoder models
(PR #24907), so T5 and BART run on the Transformers engine (`emoray.engines.seq2seq`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from emoray.config import ConfigError
from emoray.tasks import CONVERSATION


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    """Hugging Face repo id or local path handed to the engine."""
    architecture: str
    decoder_only: bool = True
    """False for an encoder-decoder, which the Transformers engine serves instead of vLLM."""
    digest: str | None = None
    """A local checkpoint's content digest (`checkpoint_digest`); None for catalog models."""
    prompt_format: str = CONVERSATION
    """How the model was trained to see an instruction (`{instruction}` is replaced by it);
    evidence per family in docs/models.md."""
    encoder_limit: int | None = None
    """An encoder-decoder's input limit in tokens (its position count): longer prompts are cut
    (status truncated); the answer is the decoder's and takes none of it."""

    @property
    def engine(self) -> str:
        """Which engine serves it: `vllm` (decoder-only) or `transformers` (encoder-decoder)."""
        return "vllm" if self.decoder_only else "transformers"

    @property
    def identity(self) -> str:
        """What the table's `model` column records: the catalog name, or a local folder's name
        and digest, so two different checkpoints in same-named folders never share answers."""
        return f"{self.name}@{self.digest}" if self.digest else self.name

    def same_model(self, column):
        """Where `column` (an Arrow array, or a dataset field expression) holds this model's
        answers: its catalog name, or any name with this checkpoint's digest (a renamed or
        moved copy of the same checkpoint reuses what is stored)."""
        import pyarrow.compute as pc

        if self.digest:
            return pc.ends_with(column, pattern=f"@{self.digest}")
        return pc.equal(column, self.name)


EMOLLMS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec("Emollama-7b", "lzw1008/Emollama-7b", "LlamaForCausalLM"),
        ModelSpec("Emollama-chat-7b", "lzw1008/Emollama-chat-7b", "LlamaForCausalLM"),
        ModelSpec("Emollama-chat-13b", "lzw1008/Emollama-chat-13b", "LlamaForCausalLM"),
        ModelSpec("Emoopt-13b", "lzw1008/Emoopt-13b", "OPTForCausalLM"),
        ModelSpec("Emobloom-7b", "lzw1008/Emobloom-7b", "BloomForCausalLM"),
        ModelSpec("Emot5-large", "lzw1008/Emot5-large", "T5ForConditionalGeneration", False,
                  encoder_limit=512),
        ModelSpec("Emobart-large", "lzw1008/Emobart-large", "BartForConditionalGeneration",
                  False, encoder_limit=1024),
    ]
}


def weight_files(source: str) -> list[Path]:
    """A local checkpoint's model weights: its safetensors files, else its pytorch_model*.bin
    (a folder may hold both copies, or a trainer's optimizer state, which are not weights);
    [] for a hub id."""
    folder = Path(source)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def checkpoint_digest(folder: Path) -> str:
    """12 hex digits of SHA-256 over a checkpoint's config, tokenizer and weights: the whole
    of small files, and of each weight file its size plus 16 windows of 64 KiB spread over it
    (fine-tuning changes every window; reading 1 MiB per shard keeps a 13B model's digest
    instant)."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer.model",
                 "model.safetensors.index.json"):
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    window, count = 1 << 16, 16
    for f in weight_files(str(folder)):
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}".encode())
        with f.open("rb") as fh:
            for i in range(count):
                fh.seek(max(0, (size - window) * i // (count - 1)))
                h.update(fh.read(window))
    return h.hexdigest()[:12]


def _supported() -> str:
    return ", ".join(m.name for m in EMOLLMS.values())


SERVED = {m.architecture for m in EMOLLMS.values() if m.decoder_only}
SEQ2SEQ = {m.architecture for m in EMOLLMS.values() if not m.decoder_only}
"""Encoder-decoder architectures the Transformers engine serves: those of the EmoLLMs. Another
one would need its own decoder-start rule and tests; refused until then."""


def encoder_limit(config: dict) -> int | None:
    """An encoder-decoder checkpoint's input positions (T5: `n_positions`, relative positions
    trained at that length; BART: `max_position_embeddings`)."""
    return config.get("n_positions") or config.get("max_position_embeddings")


def _vllm_serves(architecture: str) -> bool:
    """Whether vLLM has a model class for `architecture` (imported only for architectures
    outside the EmoLLMs': importing vLLM takes seconds)."""
    from vllm import ModelRegistry

    return architecture in ModelRegistry.get_supported_archs()


@functools.lru_cache(maxsize=32)
def resolve_model(model: str) -> ModelSpec:
    """Map a catalog name (`Emollama-chat-7b` or `lzw1008/Emollama-chat-7b`) or a local
    checkpoint folder to a spec; anything else is an error that lists what is known."""
    for spec in EMOLLMS.values():
        if model in (spec.name, spec.source):
            return spec
    path = Path(model).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"model folder {path} has no config.json: not a checkpoint")
        config = json.loads(config_file.read_text())
        architecture = (config.get("architectures") or ["unknown"])[0]
        if architecture in SEQ2SEQ:
            return ModelSpec(path.name, str(path.resolve()), architecture, False,
                             digest=checkpoint_digest(path), encoder_limit=encoder_limit(config))
        if (config.get("is_encoder_decoder") or architecture not in SERVED
                and not _vllm_serves(architecture)):
            raise ConfigError(
                f"model folder {path} holds a {architecture}, which no emoray engine serves; "
                f"use a checkpoint of {', '.join(sorted(SERVED | SEQ2SEQ))} (the EmoLLMs: "
                f"{_supported()})")
        return ModelSpec(path.name, str(path.resolve()), architecture,
                         digest=checkpoint_digest(path))
    raise ConfigError(
        f"unknown model {model!r}: give an EmoLLMs name ({_supported()}) "
        "or the path of a local checkpoint folder"
    )


TINY_MARKER = "EMORAY_TINY_MODEL.json"
"""The file `emoray tiny-model` writes into a checkpoint it built (random weights)."""


def is_tiny_model(path: str | Path) -> bool:
    """Whether `path` is a tiny random checkpoint of `emoray tiny-model` (readouts say so)."""
    return (Path(path) / TINY_MARKER).is_file()
