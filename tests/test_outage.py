"""After a total outage the picture comes back right, and soon (real sockets on loopback,
through the impairment relay process; bench/outage.py)."""

from __future__ import annotations

import asyncio

from bench import outage


def test_after_a_half_second_outage_the_picture_is_right_within_a_second() -> None:
    result = asyncio.run(outage.measure(outage_ms=500, at_s=2.0, seconds=5.0))
    assert result["relay_dropped_in_blackout"] > 0  # the outage happened
    assert result["garbage"] == 0  # never a picture from a broken reference chain
    assert result["recovery_ms"] is not None and result["recovery_ms"] < 1000
    assert result["keyframe_requests"] >= 1
