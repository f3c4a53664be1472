"""`emoray bench memory`'s input: exact rows, distinct texts, one 67 kB text, files and row
groups as asked, written to S3 on 127.0.0.1."""

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emoray import locations
from emoray.config import S3Config
from emoray.footprint import LONG_TEXT, write_input


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
