"""aifb.units formatting: one form per quantity (throughput, latency, error rate) for every
report, with units and 3 significant figures that never drop a rate's integer digits."""

from __future__ import annotations

import pytest

from aifb.units import format_metric, format_number, format_percent, format_rate, format_seconds


@pytest.mark.parametrize("value,text", [
    (58845.0, "58,845"), (58845.31, "58,845"), (312.44, "312"), (12.8, "12.8"), (6.51, "6.51"),
    (3.3712, "3.37"), (1.9, "1.9"), (0.012345, "0.0123"), (9.996, "10"), (999.6, "1,000"),
    (0.0, "0"), (-3.456, "-3.46"), (None, "n/a"),
])
def test_numbers_keep_three_significant_figures_and_every_integer_digit(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("value,text", [
    (0.000183, "183 µs"), (0.00021, "210 µs"), (0.0123, "12.3 ms"), (0.35, "350 ms"),
    (0.99996, "1 s"), (0.0009996, "1 ms"), (1.25, "1.25 s"), (123.4, "123 s"),
    (1234.5, "1,234 s"), (0.0, "0 s"), (None, "n/a"),
])
def test_durations(value, text):
    assert format_seconds(value) == text


def test_rates_percentages_and_metrics_by_name():
    assert format_rate(58845.0) == "58,845 req/s"
    assert format_rate(2.5, "queries/s") == "2.5 queries/s"
    assert format_rate(None) == "n/a"
    assert format_percent(0.01234) == "1.23%" and format_percent(0) == "0%"
    assert format_metric("rps", 12.8) == "12.8 req/s"
    assert format_metric("error_rate", 0.005) == "0.5%"
    assert format_metric("p99", 0.08) == format_metric("ttft_p99", 0.08) == "80 ms"
