"""Percentile helper."""

from __future__ import annotations

from stream import percentiles


def test_empty_samples_give_none() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_nearest_rank_values_are_observed_samples() -> None:
    result = percentiles(float(v) for v in range(1, 101))
    assert result == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}


def test_single_sample_and_rounding() -> None:
    assert percentiles([1.23456]) == {"p50": 1.235, "p95": 1.235, "p99": 1.235, "max": 1.235}


def test_order_does_not_matter() -> None:
    assert percentiles([5.0, 1.0, 3.0]) == percentiles([1.0, 3.0, 5.0])
