"""The enrich job: the latest labels joined onto a downstream table by Spark (`spark_join`),
committed to the enriched Delta table as one version (`enriched_table`), rewriting only the
partitions that changed (`scope`)."""
