"""The core of emoray: the command line and settings, the task, answer and model catalogs, the
stage contract with its columns and CPU stages, routing, a run's cost, budget and progress, the
cascade and the nightly job. The packages beside it hold the pipeline, the engines, the lake,
quality and enrich parts, and the tools."""
