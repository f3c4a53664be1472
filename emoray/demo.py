"""The embedded default: the whole annotate job on one machine with nothing but this package.

Local Ray, a real S3 endpoint on 127.0.0.1, the shipped sample texts uploaded as Parquet, and the
tiny random-weight model unless a real one is given.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emoray import io, table
from emoray.config import AnnotateConfig
from emoray.pipeline import build_annotator
from emoray.sample import sample_texts
from emoray.tiny_model import build_tiny_model

BUCKET = "emoray-demo"
TINY_MODEL_DIR = Path(".emoray/tiny-model")

WARNING = """\
=====================================================================================
 No model given: using the tiny random-weight test model. Its labels are MEANINGLESS.
 To annotate for real, give an EmoLLM, e.g. on a GPU machine:
     emoray demo --model Emollama-chat-7b --device gpu --gpu-memory-utilization 0.9
=====================================================================================
"""


def tiny_model() -> Path:
    if not (TINY_MODEL_DIR / "config.json").is_file():
        build_tiny_model(TINY_MODEL_DIR)
    return TINY_MODEL_DIR.resolve()


def upload_sample(config: AnnotateConfig) -> int:
    rows = sample_texts()
    fs, path = io.filesystem_for(config.input, config.s3)
    fs.create_dir(path, recursive=True)
    data = pa.table({"id": [i for i, _ in rows], "text": [t for _, t in rows]})
    with fs.open_output_stream(f"{path}/sample.parquet") as out:
        pq.write_table(data, out)
    return data.num_rows


def run_demo(config: AnnotateConfig, model_given: bool, docs: int = 2) -> None:
    """Annotate the sample on the local S3 endpoint (which must already be running) and print
    a few rows and the summary."""
    import ray

    if not model_given:
        print(WARNING)
    n = upload_sample(config)
    print(f"uploaded {n} sample texts to {config.input}")
    ray.init(ignore_reinit_error=True, include_dashboard=False,
             runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}})
    summary = build_annotator(config).run()
    fs, root = io.filesystem_for(config.output, config.s3)
    rows = table.read_committed(fs, root, ["doc_id", "task", "target", "score", "label", "labels",
                                           "confidence", "status", "raw_output"])
    first = pc.unique(rows["doc_id"])[:docs]
    picked = rows.filter(pc.is_in(rows["doc_id"], first)).sort_by([("doc_id", "ascending")])
    print(f"\n{picked.num_rows} of {rows.num_rows} annotated rows in {config.output}:")
    print(picked.to_pandas().to_string(index=False))
    print()
    print(summary.render())
    if not model_given:
        print("\n(labels above come from the random-weight tiny model and mean nothing)")
