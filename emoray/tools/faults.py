"""Kill a run at a chosen point, for the crash tests and `emoray bench nightly`.

    python -m emoray.tools.faults POINT[@N] <emoray command and flags>

runs the `emoray` command line with the process ended abruptly (`os._exit(17)`, no clean-up, as
a lost driver) at POINT. The points wrap the table writer's steps from outside, so nothing in
the write path knows about them:

    before-files@N    before chunk N's data files are written
    files-written@N   chunk N's files written, its Delta commit not made
    committed@N       chunk N committed, nothing after it (the run report among it)
    before-report     every chunk committed, the run report not written
    enrich-staged     `emoray enrich`: Spark's files written to the staging folder, the
                      enriched table's commit not made

A kill inside `table optimize` (its compacted files written, its commit not) needs no point
here: tests/test_table.py holds the commit in `emoray.tools.flaky_s3` (`Faults.hold`) and kills the
process while it waits.
"""

from __future__ import annotations

import functools
import os
import sys

from emoray.enrich import enriched_table
from emoray.lake import table

EXIT_CODE = 17


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


def _wrap(owner, name: str, chunk: int | None, after: bool) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        hit = chunk is None or args[-1] == chunk  # the writer's steps take the chunk last
        if hit and not after:
            _die()
        result = original(*args, **kwargs)
        if hit and after:
            _die()
        return result

    setattr(owner, name, wrapped)


def arm(point: str) -> None:
    """Install the fault `point` (see the module doc) in this process."""
    name, _, at = point.partition("@")
    chunk = int(at) if at else None
    where = {"before-files": (table.ChunkWriter, "write_files", False),
             "files-written": (table.ChunkWriter, "commit", False),
             "committed": (table.ChunkWriter, "commit", True),
             "before-report": (table, "write_report", False),
             "enrich-staged": (enriched_table, "commit_staged", False)}
    if name not in where:
        raise SystemExit(f"unknown fault point {name!r}; one of: {', '.join(where)}")
    owner, method, after = where[name]
    _wrap(owner, method, chunk, after)


def main(argv: list[str]) -> int:
    from emoray import cli

    arm(argv[0])
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
