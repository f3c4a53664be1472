"""The cost model as numbers: a dry run's estimate and a run's usage (table in, numbers out)."""

import pytest

from emoray import cost
from emoray.config import CostConfig
from emoray.models import resolve_model
from emoray.pipeline import render_dry_run


def test_gpu_estimate_follows_the_cost_model():
    model = resolve_model("Emollama-chat-7b")
    rate = 0.5 * 989e12 / (2 * 6.74e9)  # prompt tokens/s per H100
    e = cost.estimate(36_000_000, CostConfig(gpu_hour_usd=4.0), model, on_gpu=True, devices=8)
    assert e["tokens_per_s_per_device"] == round(rate, 1)
    assert e["rate_source"] == "cost model (H100 bf16)"
    assert e["device_hours"] == pytest.approx(36e6 / rate / 3600, abs=1e-4)
    assert e["hours"] == pytest.approx(e["device_hours"] / 8, abs=1e-4)
    assert e["cost_usd"] == pytest.approx(e["device_hours"] * 4.0, abs=1e-3)
    measured = cost.estimate(1_000_000, CostConfig(tokens_per_s=1000.0), model, on_gpu=False,
                             devices=1)
    assert (measured["device_hours"], measured["cost_usd"]) == (round(1000 / 3600, 4), None)
    assert cost.estimate(10, CostConfig(), model, False, 1)["device_hours"] is None
    assert cost.parameters(resolve_model("Emollama-chat-13b")) == 13.0e9


def test_usage_prices_device_time_per_million_rows():
    u = cost.usage(engine_s=7200.0, rows_out=2_000_000, cost=CostConfig(gpu_hour_usd=3.0))
    assert u == {"engine_s": 7200.0, "device_hours": 2.0, "cost_usd": 6.0,
                 "usd_per_1m_rows": 3.0}
    assert cost.usage(60.0, 10, CostConfig())["cost_usd"] is None


def test_dry_run_text_on_a_gpu_cluster():
    plan = {"input": "s3://lake/texts/", "output": "s3://lake/affect/", "model": "Emollama-chat-7b",
            "rows_in": 1000, "pairs": 2000, "already_held": 500, "rows_to_write": 1500,
            "waves": 3,
            "prompts": 1400, "reused": 100, "prompt_tokens": 140_000,
            "by_request": {"v_reg": {"rows": 750, "prompts": 700, "reused": 50,
                                     "prompt_tokens": 70_000},
                           "e_c": {"rows": 750, "prompts": 700, "reused": 50,
                                   "prompt_tokens": 70_000}},
            "device": "gpu", "devices": 8, "note": None, "gate_skipped": True,
            "estimate": {"tokens_per_s_per_device": 36684.7, "rate_source": "cost model (H100 bf16)",
                         "device_hours": 0.0011, "hours": 0.0001, "cost_usd": 0.0044}}
    lines = render_dry_run(plan).splitlines()
    assert lines[0] == ("dry run of s3://lake/texts/ -> s3://lake/affect/ (Emollama-chat-7b): no "
                        "engine started, nothing written")
    assert lines[2] == "  already held     500 of 2000 row x task pairs"
    assert lines[3] == "  waves            3 (wave_rows), served by the same engine actors"
    assert lines[7] == "  total               1500      1400       100         140000"
    assert lines[8] == ("  estimate         0.0011 GPU-hours of prefill (36685 prompt tokens/s per "
                        "GPU, cost model (H100 bf16)), 0.0 min on 8 GPU(s), $0.00; engine "
                        "start-up not included")
    assert lines[9] == "  (the quality gate is not run by a dry run)"


def test_the_budget_meter_names_the_first_cap_the_spending_reached():
    """`budget.Meter`: device-seconds are each engine actor's time since its start times its
    devices; dollars are those device-hours at `gpu_hour_usd`; within every cap, None."""
    from emoray.budget import Meter
    from emoray.config import BudgetConfig

    starts, now = [1000.0, 1900.0], 2800.0  # 1 800 + 900 s held by two actors of 2 GPUs each
    hours = BudgetConfig(max_device_hours=1.5)
    assert Meter(hours, 2).reached(0, starts, now) == \
        "1.5 device-hours spent >= budget.max_device_hours 1.5"
    assert Meter(hours, 1).reached(0, starts, now) is None  # 0.75 device-hours on one GPU each
    dollars = BudgetConfig(max_usd=5.0)
    assert Meter(dollars, 2, gpu_hour_usd=4.0).reached(0, starts, now) == \
        "6.0 USD spent >= budget.max_usd 5.0"
    assert Meter(dollars, 2, gpu_hour_usd=3.0).reached(0, starts, now) is None
    tokens = BudgetConfig(max_prompt_tokens=100)
    assert Meter(tokens).reached(99, starts, now) is None
    assert Meter(tokens).reached(100, starts, now) == \
        "100 prompt tokens spent >= budget.max_prompt_tokens 100"
    assert Meter(BudgetConfig()).reached(10**9, starts, now) is None
