"""Congestion control, pluggable through a Protocol: a window in bytes for every controller,
and for rate-based controllers a target bitrate and a pacing rate, fed with link signals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from transport.stats import DelayTrend


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSignals:
    """What the session has learnt about the path from the peer's latest delay and loss
    feedback. Times are seconds on the sender's clock, rates bits per second."""

    now: float
    trend: DelayTrend
    """The delay-gradient detector's state (libwebrtc's overuse detector): "rising" is
    overusing, "steady" normal, "falling" underusing."""
    queue_delay_s: float
    """One-way delay above its recent minimum: the standing queue."""
    loss_fraction: float
    """Share of packets lost over the recent window, 0..1."""
    rtt_s: float | None
    """Smoothed round-trip time, or None before the first sample."""
    delivered_bps: float | None
    """What the receiver actually received over roughly the last 0.5 s (libwebrtc's
    acknowledged bitrate); None while not known yet."""
    min_rtt_s: float | None = None
    """The smallest round trip measured (RFC 9002 ``min_rtt``): the path without queues."""
    bandwidth_bps: float | None = None
    """The bottleneck's rate as measured from deliveries the network held back (None while
    no queue has shown it)."""


class CongestionController(Protocol):
    """What the sender asks of a congestion controller. Times are seconds, one clock."""

    @property
    def window_bytes(self) -> int:
        """Bytes that may be in flight."""
        ...

    @property
    def target_bps(self) -> float | None:
        """The bitrate the application (the encoder) should produce; None: no opinion."""
        ...

    @property
    def pacing_bps(self) -> float | None:
        """The rate the pacer releases packets at; None: no pacing."""
        ...

    def on_acked(self, size: int, sent_at: float, now: float) -> None: ...

    def on_lost(self, size: int, sent_at: float, now: float) -> None: ...

    def on_timeout(self, now: float) -> None: ...

    def on_link(self, signals: LinkSignals) -> None:
        """Fresh delay and loss feedback (typically every 20-100 ms)."""
        ...


class NewReno:
    """NewReno as RFC 9002 §7 describes it: slow start, halving once per recovery period."""

    __slots__ = ("_min_bytes", "_mss", "_recovery_start", "_ssthresh", "window_bytes")

    def __init__(self, mss: int, initial_packets: int, min_packets: int) -> None:
        self._mss = mss
        self._min_bytes = min_packets * mss
        self.window_bytes = initial_packets * mss
        self._ssthresh = float("inf")
        self._recovery_start = float("-inf")

    @property
    def target_bps(self) -> None:
        """A window-based controller has no rate opinion."""
        return None

    @property
    def pacing_bps(self) -> None:
        """No pacing: the window alone limits sending."""
        return None

    def on_link(self, signals: LinkSignals) -> None:
        """Ignored: NewReno reacts to acknowledgements and losses only."""

    def on_acked(self, size: int, sent_at: float, now: float) -> None:
        if sent_at <= self._recovery_start:
            return  # RFC 9002 §7.3.2: no growth for packets sent before recovery began
        if self.window_bytes < self._ssthresh:
            self.window_bytes += size
        else:
            self.window_bytes += max(1, self._mss * size // self.window_bytes)

    def on_lost(self, size: int, sent_at: float, now: float) -> None:
        if sent_at <= self._recovery_start:
            return  # one reduction per round trip of losses
        self._recovery_start = now
        self._ssthresh = max(self.window_bytes // 2, self._min_bytes)
        self.window_bytes = int(self._ssthresh)

    def on_timeout(self, now: float) -> None:
        self._recovery_start = now
        self._ssthresh = max(self.window_bytes // 2, self._min_bytes)
        self.window_bytes = self._min_bytes


if TYPE_CHECKING:  # mypy checks here that NewReno implements the Protocol
    _CONFORMS: CongestionController = NewReno(1200, 10, 2)
