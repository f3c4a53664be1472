"""The engines behind one interface (`base.Engine`): vLLM for the decoder-only EmoLLMs, Transformers
for the encoder-decoder ones, the engine actor the pipeline runs and the night's pool of them.

`vllm_engine` and `seq2seq` write only their model-specific steps; `scoring` holds what an
engine returns and the scoring rules both share; `stage` is the actor, `pool` the night's
actors."""

from emoray.engines.seq2seq import Seq2SeqEngine
from emoray.engines.vllm_engine import VllmEngine

ENGINES = {"vllm": VllmEngine, "transformers": Seq2SeqEngine}
"""The engine class per `ModelSpec.engine`, chosen from the checkpoint's architecture."""
