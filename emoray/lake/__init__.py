"""The lake: input locations, files and lake tables (Delta, Iceberg) read through one snapshot,
the annotation table (Delta) with its key index, lease, migration and Glue entry, and the S3
clients every part shares."""
