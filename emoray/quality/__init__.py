"""How good the answers are: AEB gold data, evaluation and its metrics, calibration, the
nightly quality gate, and the per-run label report with its charts."""
