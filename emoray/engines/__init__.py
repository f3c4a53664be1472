"""The engines: a model behind one interface (`base.Engine`), the vLLM engine for decoder-only
models (`vllm_engine`), the Transformers engine for encoder-decoder ones (`seq2seq`), what they
return and the scoring rules they share (`scoring`), the engine actor the pipeline runs
(`stage`) and the night's pool of them (`pool`)."""

from emoray.engines.seq2seq import Seq2SeqEngine
from emoray.engines.vllm_engine import VllmEngine

ENGINES = {"vllm": VllmEngine, "transformers": Seq2SeqEngine}
"""The engine class per `ModelSpec.engine`, chosen from the checkpoint's architecture."""
