"""The per-run label report's chart and text, table in, PNG and markdown out."""

from collections import Counter

from emoray.quality import labels
from emoray.tasks import TASKS

PNG = b"\x89PNG"


def test_label_chart_draws_one_task_many_tasks_or_none():
    one = {"v_reg": {"rows": 3, "status_counts": {"ok": 3},
                     **TASKS["v_reg"].answer.summarize(Counter({0.2: 3}))}}
    many = {k: {"rows": 0, "status_counts": {}, **TASKS[k].answer.summarize(Counter())}
            for k in ("v_reg", "v_oc", "e_c", "ei_oc", "sst")}
    for summary in (one, many, {}):
        assert labels.render_chart("r1", "m", summary).startswith(PNG)
    text = labels.render_markdown("r1", "m", one)
    assert "| [0.2, 0.3) | 3 | 100.0% |" in text and "## v_reg" in text
