"""The run's progress display: plain lines off a terminal, at most one per interval, saying the
phase, rows read, rows written of the total, rate and statuses."""

import io
import re
import time
from collections import Counter

from emoray.progress import Progress


class Stream(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_plain_lines_name_the_phase_totals_and_statuses():
    counts = {"rows_in": 599, "pairs": 4193, "already_held": 193}
    p = Progress(lambda: counts, interval_s=30, stream=Stream())
    p.counts = {"rows_in": 599}
    assert p.total() is None
    assert p.line().startswith("emoray: planning 0:00:00; read 599 rows")
    p.counts = {**counts, "engine_starts": 1}
    assert p.phase() == "engine running"
    p.add(1000, Counter({"ok": 998, "empty_text": 2}))
    assert p.total() == 4000
    line = p.line()
    assert line.startswith("emoray: annotating 0:00:00; read 599 rows; wrote 1000/4000 (25 %), ")
    assert line.endswith("; empty_text 2, ok 998")
    assert " rows/s, ETA " in line


def test_off_a_terminal_at_most_one_line_per_interval():
    stream = Stream()
    interval, wall = 0.2, 1.1
    with Progress(lambda: {"rows_in": 10}, interval_s=interval, stream=stream) as p:
        time.sleep(wall)
        p.add(5, Counter({"ok": 5}))
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= wall / interval + 1
    assert all(line.startswith("emoray: ") for line in lines)
    assert re.fullmatch(r"emoray: planning 0:00:0\d; read 10 rows", lines[0])


def test_interval_zero_prints_nothing():
    stream = Stream()
    with Progress(lambda: {"rows_in": 1}, interval_s=0, stream=stream) as p:
        p.add(3, Counter({"ok": 3}))
    assert stream.getvalue() == ""
    assert p.rows == 3


def test_a_terminal_gets_one_live_bar_with_the_total():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with Progress(lambda: {"rows_in": 4, "pairs": 8}, interval_s=30, stream=stream) as p:
        time.sleep(1.2)
        p.add(8, Counter({"ok": 8}))
        time.sleep(1.1)
    out = stream.getvalue()
    assert "\r" in out and "\n" not in out.rstrip("\n")
    assert "8/8" in out and "ok 8" in out


def test_a_night_in_waves_names_its_wave_and_knows_its_total_in_the_last():
    night = {"rows_in": 300, "pairs": 600, "engine_starts": 1}
    p = Progress(lambda: dict(night), interval_s=30, stream=Stream(), waves=2)
    p.counts = {"rows_in": 300, "pairs": 600}
    assert p.phase() == "planning (wave 1/2)"
    p.counts = dict(night)
    assert p.line().startswith("emoray: engine running (wave 1/2) 0:00:00; read 300 rows")
    p.add(600, Counter({"ok": 600}))
    assert p.total() is None  # the second wave's rows are not counted yet
    assert p.line().startswith("emoray: annotating (wave 1/2) 0:00:00; read 300 rows; ok 600")
    night["prompts"] = 600  # wave 1's last prompts, counted after the display's last poll
    p.next_wave()
    assert p.phase() == "planning (wave 2/2)"  # the night's counts hold wave 1's engine
    p.counts = {"rows_in": 450, "pairs": 900, "prompts": 600, "engine_starts": 2}
    assert p.phase() == "engine running (wave 2/2)" and p.total() is None
    p.add(100, Counter({"ok": 100}))
    assert p.total() == 900
    assert p.line().startswith("emoray: annotating (wave 2/2) 0:00:00; read 450 rows; "
                               "wrote 700/900 (78 %), ")


def test_the_held_check_before_the_first_wave_is_named_while_it_runs():
    p = Progress(lambda: {}, interval_s=30, stream=Stream(), waves=2)
    p.note("checking the table: tonight's keys against its key index")
    assert p.line().startswith("emoray: checking the table: tonight's keys against its key "
                               "index 0:00:00; read 0 rows")
    p.note(None)
    assert p.phase() == "planning (wave 1/2)"
