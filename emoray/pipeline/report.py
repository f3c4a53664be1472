"""A run's summary and its text: what the driver prints after a run and the report records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunSummary:
    run_id: str
    output: str
    rows_in: int
    rows_out: int
    requests: int
    already_held: int
    prompts_sent: int
    reused: int
    status_counts: dict[str, int]
    wall_s: float
    prompt_tokens: int
    output_tokens: int
    started_at: str
    first_prompt_s: float | None = None
    usage: dict | None = None
    """Device-seconds the engine actors held, and their cost (`emoray.cost.usage`)."""
    engine_actors: list[dict] | None = None
    """Per engine actor that answered: seconds to model loaded and to first prompt, busy,
    idle, idle share (`engines.stage.EngineClock.report`)."""
    engine_idle_share: float | None = None
    retries: dict[str, int] | None = None
    """Retries the driver made, by what was retried (`s3clients.RETRIES`); engine actors
    restarted are the report's `engine_starts` beyond one per actor."""
    waves: int = 1
    """Waves the night ran in (`wave_rows`); the engine actors serve them all."""
    stored_read: dict | None = None
    """What the held check read of the table (`key_index.Read`): files, sidecars, key rows,
    and the data files (rows) holding a match, all the stored read then reads."""
    status: str = "ok"

    @property
    def rows_per_s(self) -> float:
        return self.rows_out / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["rows_per_s"] = round(self.rows_per_s, 1)
        out["wall_s"] = round(self.wall_s, 2)
        return out

    def render(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items())) or "-"
        lines = [f"run {self.run_id} committed to {self.output}"]
        if self.rows_out == 0:
            lines.append(f"  nothing new: the table already holds all {self.already_held} "
                         "row x task annotations of this input")
        return "\n".join(lines + [
            f"  rows in          {self.rows_in}",
            f"  rows annotated   {self.rows_out} ({self.requests} task/target pairs per row, "
            f"{self.already_held} already in the table)",
            f"  prompts sent     {self.prompts_sent} ({self.reused} answers reused from the "
            "table; identical and blank texts sent once or not at all)",
            f"  rows per status  {statuses}",
            f"  wall time        {self.wall_s:.1f} s ({self.rows_per_s:.1f} rows/s"
            + (f"; first prompt {self.first_prompt_s:.1f} s after the start)"
               if self.first_prompt_s is not None else ")"),
            f"  tokens           {self.prompt_tokens} prompt, {self.output_tokens} generated",
        ] + ([f"  waves            {self.waves} (each a share of the texts, planned and "
              "annotated in turn)"] if self.waves > 1 else [])
            + ([render_stored_read(self.stored_read)]
               if self.stored_read and self.stored_read["table_files"] else [])
            + (["  retries          " + ", ".join(f"{k} {v}" for k, v in
                                                  sorted(self.retries.items()))]
               if self.retries else [])
            + ([render_usage(self.usage)] if self.usage else [])
            + [render_engine_actor(r) for r in self.engine_actors or []])


def render_engine_actor(r: dict) -> str:
    """One engine actor's time line: the GPU-never-waits figures."""
    share = "-" if r["idle_share"] is None else f"{r['idle_share']:.1%}"
    return (f"  engine actor     model loaded {r['load_s']} s after start, first prompt at "
            f"{r['first_prompt_s']} s; busy {r['busy_s']} s, idle {r['idle_s']} s "
            f"(idle share {share})")


def render_stored_read(r: dict) -> str:
    """The held check's line of a summary: what it read of the table."""
    return (f"  stored read      {r['matched_files']} of {r['table_files']} table files "
            f"({r['matched_rows']} rows) hold tonight's texts; the check read "
            f"{r['sidecars_read']} key sidecars ({r['key_rows']} keys, {r['sidecar_bytes']} "
            f"bytes) and {r['files_without_sidecar']} files without one")


def render_usage(usage: dict) -> str:
    """The engine-time line of a summary."""
    cost = (f"; ${usage['cost_usd']:.4f}" + (f", ${usage['usd_per_1m_rows']:.2f} per 1 M rows"
                                             if usage["usd_per_1m_rows"] is not None else "")
            if usage["cost_usd"] is not None else "; set cost.gpu_hour_usd to see dollars")
    return (f"  engine time      {usage['engine_s']:.1f} {usage['device']}-seconds held by "
            f"{usage['engines']} engine actor(s) ({usage['device_hours']:.4f} "
            f"{usage['device']}-hours{cost})")

