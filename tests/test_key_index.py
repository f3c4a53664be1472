"""The held check reads the key index, then only the data files that hold tonight's texts
(real Ray, real deltalake, the tiny model's tokenizer; dry runs, so no engine starts): exact
skip, reuse and prompts against a table of 42 files, and the same answers with the index
deleted, rebuilt, left behind by a crashed chunk, after optimize and after vacuum."""

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.lake import key_index, table
from emoray.tools.bench import _stored_rows
from emoray.config import AnnotateConfig, EngineConfig
from emoray.models import resolve_model
from emoray.pipeline import build_annotator
from emoray.sample import sample_texts
from emoray.tasks import TASKS
from tests.conftest import ENGINE_SETTINGS

TEXTS = [t for _, t in sample_texts()][:10]
FILES, FILE_ROWS = 42, 50
PLAN = {"already_held": 2, "reused": 2, "prompts": 6, "rows_to_write": 8}
"""d0, d1 held; d2, d3 reuse x2's and x3's answers; d4 (stored as failed), d5 (stored under
another prompt version) and d6..d9 (unknown) are asked."""


def engine(tiny_model) -> EngineConfig:
    return EngineConfig(model=str(tiny_model), **ENGINE_SETTINGS)


def night(tiny_model, src: Path, out: Path):
    return build_annotator(AnnotateConfig(input=str(src), output=str(out), tasks=["v_reg"],
                                          engine=engine(tiny_model)))


def planned(tiny_model, src, out) -> tuple[dict, dict]:
    """(the dry run's counts that `PLAN` names, what its held check read)."""
    job = night(tiny_model, src, out)
    plan = job.dry_run()
    return {k: plan[k] for k in PLAN}, job.stored_read.as_dict()


def surveyed(tiny_model, src, out) -> dict:
    """What the held check alone reads (no plan): the survey of tonight's keys."""
    job = night(tiny_model, src, out)
    assert job.engine_wanted()  # d4..d9 have no settled answer
    return job.stored_read.as_dict()


def stored_file(seed: int, model: str, version: str, ids=None, texts=None, status="ok"):
    rows = _stored_rows(FILE_ROWS, "v_reg", model, version, seed)
    if ids is not None:  # the first rows answer tonight's texts
        n = len(ids)
        rows = pa.concat_tables([
            _stored_rows(n, "v_reg", model, version, seed, texts=texts).set_column(
                0, "doc_id", pa.array(ids)).set_column(
                rows.schema.get_field_index("status"), "status", pa.array([status] * n)
            ).cast(table.SCHEMA), rows.slice(n)])
    return rows


@pytest.fixture(scope="module")
def lake(ray_local, tiny_model, tmp_path_factory):
    """Tonight's 10 texts, and a table of 42 files of 50 rows: one holds d0's and d1's
    answers, one x2's and x3's (the texts of d2, d3 under other ids), one d4's as failed, one
    d5's under another prompt version, 38 hold other texts."""
    root = tmp_path_factory.mktemp("key-index")
    src, out = root / "in", root / "out"
    src.mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(10)], "text": TEXTS}),
                   src / "night.parquet")
    spec = resolve_model(str(tiny_model))
    version = engine(tiny_model).prompt_version(TASKS["v_reg"], spec.prompt_format)
    files = [stored_file(0, spec.identity, version, ["d0", "d1"], TEXTS[0:2]),
             stored_file(1, spec.identity, version, ["x2", "x3"], TEXTS[2:4]),
             stored_file(2, spec.identity, version, ["d4"], TEXTS[4:5], status="failed"),
             stored_file(3, spec.identity, "older-version", ["d5"], TEXTS[5:6])]
    files += [stored_file(seed, spec.identity, version) for seed in range(4, FILES)]
    writer = table.ChunkWriter(table.AnnotationTable(str(out)), "stored", FILE_ROWS)
    for chunk, rows in enumerate(files):
        writer.commit_chunk(rows, chunk)
    return {"src": src, "out": out, "version": version, "model": spec.identity}


def sidecars(out: Path) -> set[str]:
    return {str(p.relative_to(out / key_index.FOLDER))
            for p in (out / key_index.FOLDER).rglob("*.parquet")}


def data_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.glob("task=*/*.parquet")}


def test_the_night_reads_only_the_files_its_texts_can_match(lake, tiny_model):
    plan, read = planned(tiny_model, lake["src"], lake["out"])
    assert plan == PLAN
    assert read == {"table_files": 42, "candidate_files": 41,  # the older version's is pruned
                    "sidecars_read": 41, "sidecar_bytes": read["sidecar_bytes"],
                    "key_rows": 41 * FILE_ROWS, "files_without_sidecar": 0,
                    "matched_files": 3, "matched_rows": 3 * FILE_ROWS}
    assert 0 < read["sidecar_bytes"] < 41 * 4096
    assert sidecars(lake["out"]) == data_files(lake["out"])


def test_a_lost_index_costs_a_read_and_the_rebuild_restores_it(lake, tiny_model, capsys):
    shutil.rmtree(lake["out"] / key_index.FOLDER)
    plan, read = planned(tiny_model, lake["src"], lake["out"])
    assert plan == PLAN
    assert (read["sidecars_read"], read["files_without_sidecar"], read["matched_files"],
            read["key_rows"]) == (0, 41, 3, 41 * FILE_ROWS)
    capsys.readouterr()
    assert cli.main(["table", "index", str(lake["out"])]) == cli.EXIT_OK
    assert capsys.readouterr().out.startswith(
        f"key index of {lake['out']}: 42 sidecars written for the 42 data files of version 42")
    assert sidecars(lake["out"]) == data_files(lake["out"])
    read = surveyed(tiny_model, lake["src"], lake["out"])
    assert (read["sidecars_read"], read["files_without_sidecar"], read["matched_files"]) == (
        41, 0, 3)


def test_a_crashed_chunk_optimize_and_vacuum_keep_the_answers_exact(lake, tiny_model):
    """A chunk whose files (and sidecars) were written but never committed claims nothing;
    optimize's new files get sidecars; vacuum removes the crashed chunk's and the compacted
    files' sidecars with their data files."""
    annotations = table.AnnotationTable(str(lake["out"]))
    crashed = table.ChunkWriter(annotations, "crashed", 10**6)
    held_by_crash = stored_file(99, lake["model"], lake["version"], [f"d{i}" for i in range(10)],
                                TEXTS)
    crashed.write_files(held_by_crash, 0)  # no commit: the driver died here
    assert len(sidecars(lake["out"])) == 43
    assert planned(tiny_model, lake["src"], lake["out"])[0] == PLAN

    result = table.optimize(annotations)
    assert (result["files_after"], result["sidecars_written"]) == (1, 1)
    plan, read = planned(tiny_model, lake["src"], lake["out"])
    assert plan == PLAN
    assert (read["table_files"], read["sidecars_read"], read["files_without_sidecar"],
            read["matched_files"]) == (1, 1, 0, 1)
    table.vacuum(annotations, 0, dry_run=False)
    assert sidecars(lake["out"]) == data_files(lake["out"]) and len(data_files(lake["out"])) == 1
    assert surveyed(tiny_model, lake["src"], lake["out"])["matched_files"] == 1
