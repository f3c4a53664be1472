"""A Delta table found by name: its AWS Glue Data Catalog entry, for Athena, Trino and Spark on
EMR.

The entry is what Athena documents for a Delta Lake table (`CREATE EXTERNAL TABLE ... LOCATION
... TBLPROPERTIES ('table_type' = 'DELTA')`): an external table at the table's `s3://` location
with `table_type` DELTA, plus `spark.sql.sources.provider` delta for Spark. Readers take the
schema and the partitions from the Delta log; the entry also lists the columns (as Hive types)
for catalog browsers and engines that show them, so a schema change updates it. No partition
keys: partitions live in the log, not in Glue. Registering is idempotent: an entry that already
says all this is left alone.
"""

from __future__ import annotations

from emoray.lake import table
from emoray.config import S3Config

PRIMITIVE = {"string": "string", "long": "bigint", "integer": "int", "short": "smallint",
             "byte": "tinyint", "float": "float", "double": "double", "boolean": "boolean",
             "binary": "binary", "date": "date", "timestamp": "timestamp",
             "timestamp_ntz": "timestamp"}


def hive_type(delta_type) -> str:
    """A Delta schema type as Glue's (Hive's) type string."""
    kind = getattr(delta_type, "type", None)
    if kind == "array":
        return f"array<{hive_type(delta_type.element_type)}>"
    if kind == "map":
        return f"map<{hive_type(delta_type.key_type)},{hive_type(delta_type.value_type)}>"
    if kind == "struct":
        return "struct<" + ",".join(f"{f.name}:{hive_type(f.type)}"
                                    for f in delta_type.fields) + ">"
    name = str(kind)
    if name.startswith("decimal"):
        return name
    return PRIMITIVE[name]


def table_input(location: str, s3: S3Config, name: str) -> dict:
    """The Glue `TableInput` of the Delta table at `location` (its latest schema)."""
    delta = table.AnnotationTable(location, s3)
    if not delta.uri.startswith("s3://"):
        raise table.TableError(f"{location} is not on S3: Glue entries point at s3:// tables")
    fields = delta.snapshot().schema().fields
    return {
        "Name": name, "TableType": "EXTERNAL_TABLE",
        "Parameters": {"table_type": "DELTA", "spark.sql.sources.provider": "delta",
                       "EXTERNAL": "TRUE"},
        "StorageDescriptor": {
            "Location": delta.uri,
            "Columns": [{"Name": f.name, "Type": hive_type(f.type)} for f in fields]},
    }


def register(location: str, database: str, name: str, s3: S3Config) -> str:
    """Create or update the Glue entry `database.name` for the Delta table at `location`;
    returns `created`, `updated` or `unchanged`. The database must exist."""
    import boto3

    glue = boto3.client("glue", region_name=s3.resolved_region())
    wanted = table_input(location, s3, name)
    try:
        glue.get_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        raise table.TableError(f"Glue database {database!r} does not exist: create it (e.g. `aws "
                               f"glue create-database --database-input Name={database}`) or name "
                               "another with --glue-database") from None
    try:
        current = glue.get_table(DatabaseName=database, Name=name)["Table"]
    except glue.exceptions.EntityNotFoundException:
        glue.create_table(DatabaseName=database, TableInput=wanted)
        return "created"
    have = {"Name": current["Name"], "TableType": current.get("TableType"),
            "Parameters": current.get("Parameters", {}),
            "StorageDescriptor": {
                "Location": current.get("StorageDescriptor", {}).get("Location"),
                "Columns": [{"Name": c["Name"], "Type": c["Type"]} for c in
                            current.get("StorageDescriptor", {}).get("Columns", [])]}}
    if have == wanted:
        return "unchanged"
    glue.update_table(DatabaseName=database, TableInput=wanted)
    return "updated"
