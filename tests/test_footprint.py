"""`emoray bench memory`'s input: exact rows, distinct texts, one 67 kB text, files and row
groups as asked, written to S3 on 127.0.0.1; the input rows a run sizes its waves by."""

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emoray.lake import locations
from emoray.config import S3Config
from emoray.tools.bench_memory import LONG_TEXT, write_input


def test_input_has_the_rows_files_and_long_text_asked_for(s3_endpoint):
    uri = "s3://emoray-test/footprint/in"
    assert write_input(uri, 2_500, file_rows=1_000, group_rows=400) == 2_500
    fs, root = locations.filesystem_for(uri, S3Config())
    files = sorted(fs.get_file_info(pafs.FileSelector(root)), key=lambda i: i.path)
    assert [f.base_name for f in files] == ["part-00000.parquet", "part-00001.parquet",
                                            "part-00002.parquet"]
    groups = [pq.ParquetFile(fs.open_input_file(f.path)).metadata.num_row_groups for f in files]
    assert groups == [3, 3, 2]  # 400 + 400 + 200 rows per 1 000-row file; 500 = 400 + 100
    rows = pads.dataset(root, filesystem=fs, format="parquet").to_table()
    assert rows.num_rows == 2_500
    assert len(pc.unique(rows["id"])) == len(pc.unique(rows["text"])) == 2_500
    lengths = pc.utf8_length(rows["text"]).to_pylist()
    assert lengths.count(LONG_TEXT) == 1 and sorted(lengths)[-2] < 1_000


def test_rows_are_counted_from_parquet_footers_and_estimated_from_text_lines(s3_endpoint):
    uri = "s3://emoray-test/footprint/count"
    write_input(f"{uri}/parquet", 1_500, file_rows=1_000, group_rows=400)
    fs, root = locations.filesystem_for(uri, S3Config())
    with fs.open_output_stream(f"{root}/text/a.jsonl") as out:
        out.write(b'{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n{"id": "3", "text": "c"}')
    with fs.open_output_stream(f"{root}/text/b.csv") as out:
        out.write(b'id,text\n1,"two\nlines"\n2,b\n')
    line = b'{"id": "%08d", "text": "%s"}\n'
    with fs.open_output_stream(f"{root}/text/c.jsonl") as out:  # 64-byte lines, past the head
        out.write(b"".join(line % (i, b"x" * 33) for i in range(80_000)))
    files = locations.list_inputs(uri, fs, root)
    assert [(f.path.rsplit("/", 1)[-1], f.format) for f in files] == [
        ("part-00000.parquet", "parquet"), ("part-00001.parquet", "parquet"),
        ("a.jsonl", "jsonl"), ("b.csv", "csv"), ("c.jsonl", "jsonl")]
    by_name = {f.path.rsplit("/", 1)[-1]: f for f in files}
    assert locations.estimate_rows(fs, [by_name["part-00000.parquet"],
                                        by_name["part-00001.parquet"]]) == 1_500
    assert locations.estimate_rows(fs, [by_name["a.jsonl"]]) == 3  # no break after the last
    assert locations.estimate_rows(fs, [by_name["b.csv"]]) == 4  # 2 rows, header, quoted break
    assert fs.get_file_info(by_name["c.jsonl"].path).size == 80_000 * 64 > locations.HEAD_BYTES
    assert locations.estimate_rows(fs, [by_name["c.jsonl"]]) == 80_000
