"""Congestion control: a window in bytes, pluggable through a Protocol."""

from __future__ import annotations

from typing import Protocol


class CongestionController(Protocol):
    """What the sender asks of a congestion controller. Times are seconds, one clock."""

    @property
    def window_bytes(self) -> int: ...

    def on_acked(self, size: int, sent_at: float, now: float) -> None: ...

    def on_lost(self, size: int, sent_at: float, now: float) -> None: ...

    def on_timeout(self, now: float) -> None: ...


class NewReno:
    """NewReno as RFC 9002 §7 describes it: slow start, halving once per recovery period."""

    __slots__ = ("_min_bytes", "_mss", "_recovery_start", "_ssthresh", "window_bytes")

    def __init__(self, mss: int, initial_packets: int, min_packets: int) -> None:
        self._mss = mss
        self._min_bytes = min_packets * mss
        self.window_bytes = initial_packets * mss
        self._ssthresh = float("inf")
        self._recovery_start = float("-inf")

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
