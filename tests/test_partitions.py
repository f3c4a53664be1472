"""Hive-style partition folders of an input of files: each file's folder values, and `--where`
evaluated over them (DuckDB SQL) before any file is opened."""

import pytest

from emoray.lake import partitions
from emoray.config import ConfigError
from emoray.lake.locations import InputError, InputFile, check_values, list_inputs, pafs


def put(root, folders):
    for folder in folders:
        (root / folder).mkdir(parents=True)
        (root / folder / "p.csv").write_text("id,text\n1,a\n")


def test_where_keeps_the_files_of_matching_folders_typed_as_hive_types_them(tmp_path):
    put(tmp_path, ["n=9/lang=en", "n=10/lang=en", "n=10/lang=de", "_tmp/n=11/lang=en", "n=12",
                   "n=__HIVE_DEFAULT_PARTITION__/lang=en"])
    files = list_inputs(str(tmp_path), pafs.LocalFileSystem(), str(tmp_path))
    assert [f.partitions for f in files] == [
        (("n", "10"), ("lang", "de")), (("n", "10"), ("lang", "en")), (("n", "12"),),
        (("n", "9"), ("lang", "en")), (("n", "__HIVE_DEFAULT_PARTITION__"), ("lang", "en"))]
    listing = partitions.table(files)
    assert listing.schema.names == ["_file", "n", "lang"]
    assert str(listing.schema.field("n").type) == "int64"  # 10 > 9 as numbers, not as text
    kept = partitions.select(files, "n > 9 AND (lang = 'en' OR lang IS NULL)", str(tmp_path))
    assert [f.path[len(str(tmp_path)):] for f in kept] == ["/n=10/lang=en/p.csv", "/n=12/p.csv"]
    assert partitions.select(files, "n IS NULL", str(tmp_path))[0].partitions[0][1] == \
        "__HIVE_DEFAULT_PARTITION__"


def test_where_says_what_it_can_filter(tmp_path):
    put(tmp_path, ["day=1"])
    files = list_inputs(str(tmp_path), pafs.LocalFileSystem(), str(tmp_path))
    with pytest.raises(ConfigError, match=r"--where 'day >' cannot be applied to input .*Parser "
                       r"Error.*It is DuckDB SQL over the partition columns \(day\)"):
        partitions.select(files, "day >", "in")
    flat = [InputFile("/x/p.csv", "csv")]
    with pytest.raises(ConfigError, match="input in has no partition folders"):
        partitions.select(flat, "day = 1", "in")


def test_a_task_folder_outside_the_tasks_is_named_before_any_work(tmp_path):
    put(tmp_path, ["task=v_reg", "task=e_c"])
    files = list_inputs(str(tmp_path), pafs.LocalFileSystem(), str(tmp_path))
    with pytest.raises(InputError, match=r"task=e_c/p.csv: its partition folder task=e_c asks a "
                       r"task that is not among the requested tasks \(v_reg\)"):
        check_values(pafs.LocalFileSystem(), files, "task", ["v_reg"])
    check_values(pafs.LocalFileSystem(), files[1:], "task", ["v_reg"])
