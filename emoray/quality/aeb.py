"""Gold data of the Affective Evaluation Benchmark: (text, task request, gold answer) rows
extracted from the AEB CSV files and the AAID JSONL samples, local or in S3.

Each AEB/AAID row is a full instruction; the task catalog's templates split it back into the
text and the emotion asked about (`Task.match`), so extraction reproduces exactly what the model
was trained and evaluated on. A row no template matches, or whose gold answer does not parse, is
an error naming the file and row: the benchmark must be read whole or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emoray.lake import locations
from emoray.answers import ParseError
from emoray.config import S3Config
from emoray.tasks import TASKS, request_key, split_key

AAID_DEV = "aaid_dev_sample.jsonl"
AAID_FILES = ("aaid_test_sample.jsonl", AAID_DEV)
"""In-domain held-out samples; `aaid_train_sample.jsonl` is left out (the models trained on it).
`emoray calibrate` fits on the dev sample only."""

GOLD_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("request", pa.string()), ("gold", pa.string()),
    ("file", pa.string()), ("row", pa.int64()), ("template", pa.int64()),
])


def shipped() -> str:
    """The AEB folder shipped with emoray (`emoray/data/aeb`, with its licence and README)."""
    return str(resources.files("emoray.data").joinpath("aeb"))


def files_for(task_names: list[str], aaid_files: tuple[str, ...] = AAID_FILES) -> list[str]:
    """The benchmark files holding gold answers for these tasks (of the AAID samples, those in
    `aaid_files`)."""
    out: list[str] = []
    for name in task_names:
        source = TASKS[name].source
        for f in aaid_files if source == "aaid" else [source] if source else []:
            if f not in out:
                out.append(f)
    return out


def _rows(text: str, name: str) -> list[tuple[str, str]]:
    """(instruction, answer) pairs of one file's content."""
    if name.endswith(".csv"):
        return [(r["Instruction"], r["Answer"]) for r in csv.DictReader(io.StringIO(text))]
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if "conversations" in r:
            out.append((r["conversations"][0]["value"], r["conversations"][1]["value"]))
        else:
            out.append((r["instruction"], r["output"]))
    return out


def extract_file(text: str, name: str) -> pa.Table:
    """Gold rows of one benchmark file (its name decides which tasks may match)."""
    aaid = name.startswith("aaid_")
    candidates = [t for t in TASKS.values() if (t.source == "aaid") == aaid
                  and (aaid or t.source == name)]
    cols: dict[str, list] = {f.name: [] for f in GOLD_SCHEMA}
    for i, (instruction, answer) in enumerate(_rows(text, name)):
        hit = next(((t, m) for t in candidates if (m := t.match(instruction))), None)
        if hit is None:
            raise locations.InputError(
                f"{name} row {i}: no task template matches the instruction "
                f"{instruction[:80]!r}...")
        task, (body, target, template) = hit
        try:
            task.answer.parse(answer)
        except ParseError as e:
            raise locations.InputError(
                f"{name} row {i}: gold answer does not parse: {e}") from None
        key = request_key(task.name, target)
        for col, value in zip(cols, [f"{name}#{i}", body, key, answer, name, i, template]):
            cols[col].append(value)
    return pa.table(cols, schema=GOLD_SCHEMA)


def extract(data: str | None, s3: S3Config, requests: list[str],
            aaid_files: tuple[str, ...] = AAID_FILES) -> pa.Table:
    """Gold rows for the task requests (`v_reg`, `ei_reg:joy`) from the benchmark folder
    `data` (local or s3://; None: the copy shipped with emoray), reading of the AAID samples
    those in `aaid_files`."""
    data = data or shipped()
    fs, root = locations.filesystem_for(data, s3)
    tables = []
    for name in files_for(list(dict.fromkeys(split_key(k)[0] for k in requests)),
                          aaid_files):
        path = posixpath.join(root, name)
        try:
            with fs.open_input_stream(path) as fh:
                content = fh.read().decode("utf-8")
        except (FileNotFoundError, OSError) as e:
            raise locations.InputError(
                f"benchmark file {name} not found in {data} ({e}); point --data at an AEB "
                "folder, or leave it unset for the copy shipped with emoray") from None
        tables.append(extract_file(content, name))
    gold = pa.concat_tables(tables) if tables else GOLD_SCHEMA.empty_table()
    return gold.filter(pc.is_in(gold["request"], pa.array(requests, pa.string())))


def sample(gold: pa.Table, limit: int | None, seed: int) -> pa.Table:
    """At most `limit` rows per task request, drawn at random with `seed`, in file order."""
    if limit is None:
        return gold
    rng = np.random.default_rng(seed)
    requests = np.array(gold["request"].to_pylist(), dtype=object)
    chosen: list[int] = []
    for key in dict.fromkeys(requests):
        rows = np.flatnonzero(requests == key)
        chosen.extend(rng.permutation(rows)[:limit].tolist())
    return gold.take(sorted(chosen))
