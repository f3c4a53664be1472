"""Starting Ray, once, for every command: a local instance or a cluster address, with the logs of
Ray, Ray Data and the engine workers kept off the user's terminal unless `--verbose`.

Quiet by default because a run's own progress line and summary say what a user needs; every log
still lands in Ray's session folder (`/tmp/ray/session_latest/logs`), and an engine's exception
reaches the driver with its traceback either way. What quiet turns off, and why each:

- worker output (`log_to_driver`): vLLM's start-up warnings, Triton notices and the
  multiprocessing `resource_tracker` KeyErrors vLLM's worker processes leave at exit;
- Ray Data's progress tables (printed every 10 s when stdout is not a terminal) and its INFO
  lines (execution plan, start, finish): emoray prints its own progress;
- Ray's notice that a new local instance turned token authentication on (it stays on).

Ray Data reads Parquet through its first datasource (`DataContext.use_datasource_v2` off): Ray
2.60's second one starts a `ListFiles` actor pool in every execution, about 1.2 s before the first
row of even a 30-row file on a warm local Ray (0.17 s with the first; /tmp/p33/rd3.py in the
notes of issue 32), and a night reads its input twice (survey, plan); at 1 M rows in 8 files the
two read alike (2.4-6.0 s against 3.2-3.7 s, noisy). docs/performance.md has the figures.

One line stays: Ray core's "Actor ... has constructor arguments in the object store and
max_restarts > 0", once per engine actor (`engines.pool.EnginePool`), since its constructor
arguments travel as object references (ray-project/ray#53727). The references live as long as
the actors (the pool holds its handles for the night), so a restarted actor finds them. emoray
relies on those restarts (a killed engine actor loses nothing, tests/test_incremental.py), so
`max_restarts=0` is no fix, and the only switch that mutes it (`RAY_BACKEND_LOG_LEVEL`) would
mute the local raylet's and GCS's own logs as well.
"""

from __future__ import annotations

import logging

AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def start_ray(address: str | None = None, verbose: bool = False, **init_args) -> None:
    """`ray.init` for a command (no-op when this process already joined Ray)."""
    import ray

    if ray.is_initialized():
        configure_ray_data(verbose)
        return
    if not verbose:
        logging.getLogger(AUTH_LOGGER).setLevel(logging.ERROR)
    init_args.setdefault("include_dashboard", False if address is None else None)
    ray.init(address=address, log_to_driver=verbose,
             logging_level=logging.INFO if verbose else logging.WARNING, **init_args)
    configure_ray_data(verbose)


def configure_ray_data(verbose: bool = False) -> None:
    """Ray Data's progress display and INFO logs off (on with `verbose`); Parquet read through
    its first datasource (see the module's docstring)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.use_datasource_v2 = False
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
