"""Lake tables as input, over S3 on 127.0.0.1: a Delta table and an Iceberg table (pyiceberg's SQL
catalog on a SQLite file, its warehouse on the S3 endpoint) read through one snapshot (its live
files only, never the log, metadata or files an overwrite or a delete removed), a version pinned
with `--input-version`, and nights over a growing table that send prompts for new texts only."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from emoray import cli
from emoray.lake import locations, s3clients, table
from emoray.config import AnnotateConfig, ConfigError, EngineConfig, S3Config
from emoray.pipeline import build_annotator, prepare
from emoray.sample import sample_texts
from tests.conftest import ENGINE_FLAGS, ENGINE_SETTINGS
from tests.readers import kernel_read

TEXTS = [t for _, t in sample_texts()]


def write(uri, ids, texts, mode="append", **kw):
    data = pa.table({"id": ids, "text": texts, "lang": ["en"] * len(ids)})
    write_deltalake(uri, data, mode=mode, storage_options=s3clients.delta_options(uri, S3Config()),
                    **kw)


def config(tiny_model, src, out="s3://emoray-test/lake-in/unused", **kw):
    engine = EngineConfig(model=str(tiny_model), **ENGINE_SETTINGS)
    return AnnotateConfig(input=src, output=out, tasks=kw.pop("tasks", ["v_reg"]), engine=engine,
                          **kw)


@pytest.fixture(scope="module")
def history(s3_endpoint):
    """A Delta input whose history removes files: version 0 holds 40 rows, version 1 overwrites
    them with 20 (texts 40-59), version 2 deletes 5 of those (a file rewritten)."""
    uri = "s3://emoray-test/lake-in/history"
    write(uri, [f"a{i}" for i in range(40)], TEXTS[:40], mode="overwrite")
    write(uri, [f"b{i:02d}" for i in range(20)], TEXTS[40:60], mode="overwrite")
    DeltaTable(uri, storage_options=s3clients.delta_options(uri, S3Config())).delete(
        "id < 'b05'")
    return uri


def test_a_delta_input_is_its_snapshot_not_its_files(history, tiny_model):
    dt = DeltaTable(history, storage_options=s3clients.delta_options(history, S3Config()))
    live = sorted(u[len("s3://"):] for u in dt.file_uris())
    fs, path = locations.filesystem_for(history, S3Config())
    stored = [e.path for e in fs.get_file_info(locations.pafs.FileSelector(path, recursive=True))
              if e.type == locations.pafs.FileType.File]
    assert len([p for p in stored if "/_delta_log/" not in p]) > len(live)  # removed files lie there
    job = prepare(config(tiny_model, history))
    assert [f.path for f in job.night.files] == live
    assert job.night.table.version == 2 and job.source_record == {
        "input_format": "delta", "input_table_id": dt.metadata().id, "input_version": "2"}
    assert locations.estimate_rows(job.night.fs, job.night.files) == 15
    pinned = prepare(config(tiny_model, history, input_version="0")).night
    assert pinned.table.version == 0
    assert locations.estimate_rows(pinned.fs, pinned.files) == 40


def test_a_delta_input_says_what_is_wrong_before_any_work(history, tiny_model, capsys):
    with pytest.raises(locations.InputError, match=r"has no text column 'body' \(columns: id, "
                       r"text, lang\); name it with --text-column"):
        build_annotator(config(tiny_model, history, text_column="body"))
    with pytest.raises(locations.InputError, match=f"input table {history} has no version 9"):
        build_annotator(config(tiny_model, history, input_version="9"))
    with pytest.raises(ConfigError, match="not one \\(no _delta_log/, not iceberg://\\)"):
        build_annotator(config(tiny_model, "s3://emoray-test/lake-in/plain", input_version="1"))
    parted = "s3://emoray-test/lake-in/parted"
    write(parted, ["p0", "p1"], TEXTS[:2], mode="overwrite", partition_by=["lang"])
    with pytest.raises(locations.InputError, match="the task column 'lang' is a partition column"):
        build_annotator(config(tiny_model, parted, task_column="lang"))
    # a folder holding a table is never read as files
    assert cli.main(["annotate", "--dry-run", "--input", "s3://emoray-test/lake-in",
                     "--output", "s3://emoray-test/lake-in-out", "--model", str(tiny_model),
                     "--tasks", "v_reg", *ENGINE_FLAGS]) == 3
    assert ("holds a Delta table at emoray-test/lake-in/history, whose folder holds removed "
            "files and its log beside its rows: name the table itself as --input"
            ) in capsys.readouterr().err


def three_nights(tiny_model, src, out, grow, **kw):
    """A first night over 12 texts, then `grow(1)` (4 more) and `grow(2)` (delete g0, a
    rewrite of its 12-row file; add g16 and a new id g3-again for a known text), a night after
    each, every night reading only what the last did not (`since_last`); then a fourth night
    with nothing new. Each night's rows read, prompts sent, rows written, files read."""
    nights = [build_annotator(config(tiny_model, src, out, since_last=True, **kw)).run()]
    for step in (1, 2, 3):
        if step < 3:
            grow(step)
        nights.append(build_annotator(config(tiny_model, src, out, since_last=True,
                                             **kw)).run())
    reports = {r["run_id"]: r for r in table.run_reports(table.AnnotationTable(out))}
    assert [(n.rows_in, n.prompts_sent, n.rows_out, reports[n.run_id]["input_files_read"])
            for n in nights] == [(12, 12, 12, 1), (4, 4, 4, 1), (13, 1, 2, 2), (0, 0, 0, 0)]
    rows = table.AnnotationTable(out).read(columns=["doc_id", "status"])
    for seen in (rows, kernel_read(out, ["doc_id", "status"])):
        assert sorted(seen["doc_id"].to_pylist()) == sorted(
            [f"g{i}" for i in range(17)] + ["g3-again"])  # g0 removed from the input, kept here
        assert pc.all(pc.equal(seen["status"], "ok")).as_py()
    return nights


def test_nights_over_a_growing_delta_input_send_only_new_texts(s3_endpoint, ray_local,
                                                               tiny_model):
    src, out = "s3://emoray-test/lake-in/growing", "s3://emoray-test/lake-in/growing-out"
    write(src, [f"g{i}" for i in range(12)], TEXTS[:12], mode="overwrite")

    def grow(step):
        if step == 1:
            write(src, [f"g{i}" for i in range(12, 16)], TEXTS[12:16])
            return
        DeltaTable(src, storage_options=s3clients.delta_options(src, S3Config())).delete(
            "id = 'g0'")
        write(src, ["g16", "g3-again"], [TEXTS[16], TEXTS[3]])

    three_nights(tiny_model, src, out, grow)
    history = DeltaTable(out, storage_options=s3clients.delta_options(out, S3Config())).history()
    read = [h.get("input_version") for h in history if h.get("operation") == "WRITE"]
    assert read == ["3", "1", "0"]  # newest first: each night's commit names what it read
    # the whole snapshot when asked (--full-input): 17 rows, nothing to send
    whole = build_annotator(config(tiny_model, src, out)).run()
    assert (whole.rows_in, whole.prompts_sent, whole.rows_out) == (17, 0, 0)


def test_nights_over_a_growing_folder_read_new_and_changed_files(s3_endpoint, ray_local,
                                                                tiny_model):
    src, out = "s3://emoray-test/lake-in/folder", "s3://emoray-test/lake-in/folder-out"
    put = locations.write_texts
    s3 = S3Config()
    put(src, s3, [f"f{i}" for i in range(6)], TEXTS[:6], name="a.parquet")
    counts = []
    for step in range(4):
        if step == 1:
            put(src, s3, ["f6", "f7", "f8"], TEXTS[6:9], name="b.parquet")
        if step == 2:  # a.parquet rewritten with one more row
            put(src, s3, [f"f{i}" for i in range(6)] + ["f9"], TEXTS[:6] + [TEXTS[9]],
                name="a.parquet")
        night = build_annotator(config(tiny_model, src, out, since_last=True)).run()
        counts.append((night.rows_in, night.prompts_sent, night.rows_out))
    assert counts == [(6, 6, 6), (3, 3, 3), (7, 1, 1), (0, 0, 0)]
    assert table.AnnotationTable(out).read(columns=["doc_id"]).num_rows == 10


def test_a_partitioned_folder_reads_the_partitions_where_names(s3_endpoint, ray_local,
                                                               tiny_model):
    """Hive-style folders: `--where` over their columns rules files out before any is opened,
    and a folder column serves as the task column."""
    src, out = "s3://emoray-test/lake-in/parted-files", "s3://emoray-test/lake-in/parted-out"
    layout = {"date=2026-11-30/task=v_reg": 2, "date=2026-12-01/task=v_reg": 3,
              "date=2026-12-01/task=v_oc": 1, "date=2026-12-02/task=v_oc": 2}
    first = 0
    for folder, n in layout.items():
        locations.write_texts(f"{src}/{folder}", S3Config(), [f"h{first + i}" for i in range(n)],
                              TEXTS[first:first + n])
        first += n
    settings = {"task_column": "task", "tasks": ["v_reg", "v_oc"]}
    where = "date >= '2026-12-01'"
    with pytest.raises(ConfigError, match=r"--where \"lang = 'en'\" cannot be applied to input "
                       r".*Binder Error.*partition columns \(date, task\)"):
        build_annotator(config(tiny_model, src, out, where="lang = 'en'", **settings))
    delta = "s3://emoray-test/lake-in/parted-delta"
    write(delta, ["d0"], TEXTS[:1], mode="overwrite")
    with pytest.raises(ConfigError, match="is a delta table: drop --where"):
        build_annotator(config(tiny_model, delta, where=where))
    night = build_annotator(config(tiny_model, src, out, where=where, **settings)).run()
    assert (night.rows_in, night.prompts_sent, night.rows_out) == (6, 6, 6)
    rows = table.AnnotationTable(out).read(columns=["doc_id", "task", "status"])
    assert sorted(zip(*(rows[c].to_pylist() for c in ("doc_id", "task", "status")))) == [
        ("h2", "v_reg", "ok"), ("h3", "v_reg", "ok"), ("h4", "v_reg", "ok"),
        ("h5", "v_oc", "ok"), ("h6", "v_oc", "ok"), ("h7", "v_oc", "ok")]


def test_nights_over_a_growing_iceberg_input_send_only_new_texts(s3_endpoint, ray_local,
                                                                 tiny_model, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = {"name": "lake", "type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
               "warehouse": "s3://emoray-test/lake-in/warehouse"}
    props = {k: v for k, v in catalog.items() if k not in ("name", "type")}
    lake = SqlCatalog("lake", **props, **{"s3.endpoint": s3_endpoint})
    lake.create_namespace("news")
    texts = lake.create_table("news.texts", schema=pa.schema([("id", pa.string()),
                                                               ("text", pa.string())]))

    def append(ids, rows):
        texts.append(pa.table({"id": ids, "text": rows}))

    append([f"g{i}" for i in range(12)], TEXTS[:12])
    first_snapshot = texts.current_snapshot().snapshot_id

    def grow(step):
        if step == 1:
            append([f"g{i}" for i in range(12, 16)], TEXTS[12:16])
            return
        texts.delete("id == 'g0'")
        append(["g16", "g3-again"], [TEXTS[16], TEXTS[3]])

    src, out = "iceberg://news.texts", "s3://emoray-test/lake-in/iceberg-out"
    three_nights(tiny_model, src, out, grow, iceberg_catalog=catalog)
    pinned = prepare(config(tiny_model, src, out, iceberg_catalog=catalog,
                            input_version=str(first_snapshot)))
    assert locations.estimate_rows(pinned.night.fs, pinned.night.files) == 12
    assert pinned.source_record == {"input_format": "iceberg",
                                     "input_table_id": str(texts.metadata.table_uuid),
                                     "input_version": str(first_snapshot)}
    assert all(f.path.startswith("emoray-test/lake-in/warehouse/news/texts/data/")
               for f in pinned.night.files)
