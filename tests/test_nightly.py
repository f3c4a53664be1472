"""`emoray nightly` end to end: annotate a date partition, then enrich a downstream partition
with its labels; a join that fails after annotating is a partial failure that keeps the labels."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from emoray import cli
from emoray.lake import table
from tests.conftest import ENGINE_SETTINGS


def test_nightly_annotates_then_enriches_a_date_partition(spark, ray_local, tiny_model, tmp_path,
                                                          capsys):
    src = tmp_path / "texts" / "date=2026-11-21"
    src.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["so happy", "so sad", ""]}),
                   src / "t.parquet")
    down = tmp_path / "orders" / "date=2026-11-21"
    down.mkdir(parents=True)
    (down / "o.jsonl").write_text('{"order": 1, "doc": "a"}\n{"order": 2, "doc": "c"}\n'
                                  '{"order": 3, "doc": "zz"}\n{"order": 4, "doc": "a"}\n')
    profile = tmp_path / "nightly.yaml"
    night = {
        "input": str(tmp_path / "texts" / "date={date}"), "output": str(tmp_path / "ann"),
        "tasks": ["v_reg", "e_c"], "engine": ENGINE_SETTINGS,
        "enrich": {"downstream": str(tmp_path / "orders" / "date={date}"),
                   "output": str(tmp_path / "enriched" / "date={date}"), "key": "doc",
                   "format": "jsonl",
                   "master": "local[2]"}}
    profile.write_text(json.dumps(night))
    args = ["nightly", "--config", str(profile), "--date", "2026-11-21",
            "--model", str(tiny_model)]
    assert cli.main(args) == cli.EXIT_OK, capsys.readouterr().err[-2000:]
    printed = capsys.readouterr().out
    assert "enrich    4 of 4 downstream rows written with labels of" in printed
    rows = {r["order"]: r for r in DeltaTable(
        str(tmp_path / "enriched" / "date=2026-11-21")).to_pyarrow_table().to_pylist()}
    assert len(rows) == 4
    assert rows[1]["affect_valence"] is not None and rows[1]["affect_emotions"]
    assert rows[4]["affect_valence"] == rows[1]["affect_valence"]
    assert rows[2]["affect_valence"] is None  # empty text: no label
    assert rows[3]["affect_valence"] is None  # not annotated

    # the join fails after annotating (nothing new): a partial failure, labels kept
    night["enrich"]["key"] = "no_such_column"
    profile.write_text(json.dumps(night))
    assert cli.main([*args, "--json"]) == cli.EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "committed 0 rows, then the enrichment failed" in err
    assert "has no key column 'no_such_column'" in err
    assert table.AnnotationTable(str(tmp_path / "ann")).read().num_rows == 6
