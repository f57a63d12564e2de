"""Pacing: a token bucket that spreads packets at a set rate, with a small burst allowance.

Like libwebrtc's ``IntervalBudget`` (``modules/pacing/interval_budget.cc``), the budget earned
while idle is capped, so a pause does not let the next big frame leave at line rate: here the
cap is ``burst_s`` of the rate, at least ``min_burst_packets`` packets of ``mss_bytes``
(libwebrtc caps it at the budget of its 500 ms window when ``can_build_up_underuse`` is off,
which is too much for frames of tens of kilobytes; a few milliseconds is what a pacer in a
kernel qdisc such as ``fq`` allows, two packets the least that keeps a steady stream from
stalling on rounding).

Sans-I/O: the time is an argument (seconds, one clock). The hot methods allocate nothing but
the floats they return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Pacer", "PacerConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PacerConfig:
    """How much a :class:`Pacer` lets go at once."""

    burst_s: float = 0.005
    """Budget a pause may build up, in seconds of the pacing rate."""
    min_burst_packets: int = 2
    """Floor of the burst allowance, in packets of ``mss_bytes``."""
    mss_bytes: int = 1200

    def __post_init__(self) -> None:
        if not (math.isfinite(self.burst_s) and self.burst_s >= 0):
            raise ValueError("burst_s must be a finite number >= 0")
        if self.min_burst_packets < 1:
            raise ValueError("min_burst_packets must be >= 1")
        if self.mss_bytes < 1:
            raise ValueError("mss_bytes must be >= 1")


class Pacer:
    """A token bucket in bytes. ``set_rate(None)`` (the start) means unpaced.

    A packet may leave once the bucket holds its size (or the whole burst allowance, for a
    packet larger than that, which then leaves the bucket in debt); sending takes its size
    out. The bucket starts full and never holds more than the burst allowance, so over any
    interval ``t`` of a constant rate at most ``rate * t + burst`` bytes leave (plus the
    excess of one oversize packet).

    A rate change applies from the last send on: the refill since then is counted at the new
    rate (``set_rate`` takes no time). That refill is capped at the burst, so the error is at
    most one burst.
    """

    __slots__ = ("_burst_bytes", "_config", "_last_s", "_rate_Bps", "_tokens")

    def __init__(self, config: PacerConfig | None = None) -> None:
        self._config = config if config is not None else PacerConfig()
        self._rate_Bps: float | None = None  # bytes per second, None: unpaced
        self._burst_bytes = float(self._config.min_burst_packets * self._config.mss_bytes)
        self._tokens = self._burst_bytes  # as of _last_s
        self._last_s = -math.inf

    @property
    def rate_bps(self) -> float | None:
        """The pacing rate in bits per second, or None when unpaced."""
        return None if self._rate_Bps is None else self._rate_Bps * 8.0

    @property
    def burst_bytes(self) -> float:
        """The most the bucket holds: what may leave back to back after a pause."""
        return self._burst_bytes

    def set_rate(self, bps: float | None) -> None:
        """Pace at ``bps`` bits per second from now on; None sends everything at once."""
        if bps is None:
            self._rate_Bps = None
            return
        if not (bps > 0 and math.isfinite(bps)):
            raise ValueError("the pacing rate must be a finite number > 0, or None")
        config = self._config
        if self._rate_Bps is None:
            self._tokens = math.inf  # was unpaced: start from a full bucket (clamped below)
        self._rate_Bps = bps / 8.0
        self._burst_bytes = max(
            self._rate_Bps * config.burst_s, float(config.min_burst_packets * config.mss_bytes)
        )
        if self._tokens > self._burst_bytes:
            self._tokens = self._burst_bytes

    def next_send_s(self, now: float, size: int) -> float:
        """The earliest time a packet of ``size`` bytes may leave; ``<= now`` means now.
        Pure: asking changes nothing."""
        rate = self._rate_Bps
        if rate is None:
            return now
        need = size if size < self._burst_bytes else self._burst_bytes
        tokens = self._tokens
        if tokens >= need:  # already enough, however little time has passed
            return now
        # The bucket refills from _last_s; the cap cannot bind below `need` <= burst.
        return self._last_s + (need - tokens) / rate

    def release_s(self, size: int) -> float:
        """When a packet of ``size`` bytes may leave, without knowing the time: the last send
        when the bucket already holds enough (or when unpaced), else when it will."""
        if self._rate_Bps is None:
            return self._last_s
        return max(self._last_s, self.next_send_s(self._last_s, size))

    def on_sent(self, now: float, size: int) -> None:
        """A packet of ``size`` bytes left at ``now``."""
        rate = self._rate_Bps
        if rate is None:
            self._tokens = self._burst_bytes
            self._last_s = now
            return
        elapsed = now - self._last_s
        if elapsed > 0:  # a clock step back refills nothing
            tokens = self._tokens + elapsed * rate
            self._tokens = tokens if tokens < self._burst_bytes else self._burst_bytes
            self._last_s = now
        self._tokens -= size
