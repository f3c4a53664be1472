"""The annotate job as a Ray Data pipeline, one module per phase: prepare the job, the held
check, the plan, the run and its watchdog, the dry run and the summary.

The pipeline is one ordered list of declared stages (`job.STAGES`, each an
`emoray.contract.Stage`):

    read (Parquet/JSONL/CSV) → Normalize (id, text, hash) ──┐
    ReadStored: this model's rows (one Delta snapshot) ─────┴→ hash shuffle on text hash
      → ExpandRequests → SkipHeld → AttachReuse → GroupByText (one text-hash partition)
      → Engine (vLLM or Transformers actors) → Parse + fan out
      → one Delta commit per chunk → report

One module per phase: `job` (prepare: every check and read before Ray, a frozen run context),
`held` (what the table already answers), `plan` (the shuffle, stream and wave shapes), `run`
(lease, gate, engines, write loop, verdict, report) with `watchdog` (lost engine nodes) and
`stats` (the run's counters), `dry_run`, `report` (the summary), and `annotator`, the face
callers hold: `build_annotator(config).run()`.
"""

from emoray.pipeline.annotator import Annotator, build_annotator
from emoray.pipeline.dry_run import render_dry_run
from emoray.pipeline.job import STAGES, Job, Scoring, new_run_id, prepare, resolve_scoring
from emoray.pipeline.report import RunSummary
from emoray.pipeline.run import IncompleteRunError
from emoray.pipeline.stats import RunStats
from emoray.pipeline.watchdog import NoEngineNodeError

__all__ = ["STAGES", "Annotator", "IncompleteRunError", "Job", "NoEngineNodeError",
           "RunStats", "RunSummary", "Scoring", "build_annotator", "new_run_id", "prepare",
           "render_dry_run", "resolve_scoring"]
