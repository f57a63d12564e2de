"""The link this side sends on, as its own traffic shows it: the estimators, fed by the session.

The session hands :class:`LinkEstimator` three things: the time and packet number of every DATA
packet it sends (:meth:`LinkEstimator.on_sent`), the peer's ARRIVALS records (when and in which
order those packets arrived, by the peer's clock, PROTOCOL.md §4.8), and on each refresh its
RTT estimator, its loss tracker and the bytes the peer has acknowledged. From these come the
RFC 3550 jitter, the queueing-delay trend and periodic spikes (:mod:`transport.delaytrend`),
the bottleneck bandwidth (:class:`~transport.estimator.DeliveryRate`), goodput, and the quality
class with its hysteresis (:mod:`transport.quality`). How each field is computed, with the RFC or
paper it follows: ``docs/LINK.md``.

Everything here describes the direction *from* this side: a pure receiver sends only ACKs and
keepalives, so its jitter, trend and bandwidth stay unknown (None) while its RTT is measured.
"""

from __future__ import annotations

import math
from collections import deque

from transport.delaytrend import SpikeDetector, TrendlineEstimator
from transport.estimator import DeliveryRate, InterarrivalJitter, LossTracker
from transport.packet import DATA_OVERHEAD_BYTES
from transport.quality import Quality, QualityClassifier, QualityConfig
from transport.rtt import RttEstimator
from transport.stats import LinkStats, SpikeStats
from transport.wire import Arrival

SEND_RING = 4096
"""Packets whose send time is remembered; a record for an older packet is ignored. At 10 000
packets/s that is 0.4 s, far more than an ARRIVALS record waits (one ACK delay)."""
REFRESH_S = 0.05
"""Shortest interval between two quality updates (each costs a few microseconds)."""
GOODPUT_WINDOW_S = 1.0
DELIVERED_WINDOW_S = 0.5
"""The span the peer's receive rate is measured over (libwebrtc's acknowledged-bitrate
estimator also looks at about half a second)."""
SPIKE_MEMORY_S = 3.0
"""How long one latency spike counts towards the quality class (a periodic pattern counts for
as long as it lasts): long enough to bridge the gaps of a once-a-second Wi-Fi scan pattern
before its period is established, short enough that a one-off stall is soon forgotten."""

_MASK = SEND_RING - 1


class LinkEstimator:
    """Estimates of the outgoing path of one session (sans-I/O; times in seconds)."""

    __slots__ = (
        "_acked",
        "_classifier",
        "_delivery",
        "_jitter",
        "_last_bytes",
        "_last_packets",
        "_last_refresh_s",
        "_last_us",
        "_limited",
        "_received",
        "_send_s",
        "_spikes",
        "_tag",
        "_trend",
        "samples",
    )

    def __init__(self, quality: QualityConfig | None = None) -> None:
        self._send_s = [0.0] * SEND_RING
        self._tag = [-1] * SEND_RING  # which packet number each slot holds
        self._limited = bytearray(SEND_RING)
        self._jitter = InterarrivalJitter()
        self._trend = TrendlineEstimator()
        self._spikes = SpikeDetector()
        self._delivery = DeliveryRate()
        self._classifier = QualityClassifier(quality)
        self._last_us = -1
        self._last_packets = 0
        self._last_bytes = 0
        self._last_refresh_s = -math.inf
        # (receive time by the peer's clock, bytes it had received), over DELIVERED_WINDOW_S.
        self._received: deque[tuple[float, int]] = deque()
        # (time, payload bytes acknowledged so far), one per refresh, over the goodput window.
        self._acked: deque[tuple[float, int]] = deque()
        self.samples = 0
        """ARRIVALS records used."""

    # -- input --------------------------------------------------------------------------------

    def on_sent(self, pn: int, now: float, app_limited: bool) -> None:
        """Packet ``pn`` left at ``now``; ``app_limited``: nothing else was waiting to go."""
        slot = pn & _MASK
        self._send_s[slot] = now
        self._tag[slot] = pn
        self._limited[slot] = app_limited

    def on_arrivals(self, records: tuple[Arrival, ...]) -> None:
        """The peer's records, in arrival order. Records not later than the last one used (an
        ARRIVALS frame that was overtaken), whose running totals went backwards (a peer can
        send anything) or for packets no longer remembered are skipped."""
        for pn, recv_us, packets, size in records:
            if recv_us <= self._last_us or packets < self._last_packets or size < self._last_bytes:
                continue
            slot = pn & _MASK
            if self._tag[slot] != pn:
                continue
            self._last_us = recv_us
            self._last_packets = packets
            self._last_bytes = size
            send_s = self._send_s[slot]
            recv_s = recv_us * 1e-6
            self._jitter.on_packet(send_s, recv_s)
            trend = self._trend
            trend.on_packet(send_s, recv_s, 0)
            self._spikes.on_sample(recv_s, trend.owd_s)
            self._delivery.on_sample(pn, send_s, recv_s, packets, size, bool(self._limited[slot]))
            self.samples += 1
            received = self._received
            received.append((recv_s, size))
            while len(received) > 2 and recv_s - received[1][0] >= DELIVERED_WINDOW_S:
                received.popleft()

    def refresh(
        self, now: float, rtt: RttEstimator, loss: LossTracker, acked_bytes: int, acked: int
    ) -> Quality | None:
        """Update goodput and the quality class (at most every ``REFRESH_S``); return the new
        class when it changed. ``acked_bytes`` and ``acked`` are the running totals of bytes
        and packets the peer has acknowledged."""
        if now - self._last_refresh_s < REFRESH_S:
            return None
        self._last_refresh_s = now
        history = self._acked
        history.append((now, acked_bytes - acked * DATA_OVERHEAD_BYTES))
        while len(history) > 2 and history[1][0] <= now - GOODPUT_WINDOW_S:
            history.popleft()
        return self._classifier.update(
            now,
            rtt_s=rtt.srtt_s if rtt.samples else None,
            loss_pct=loss.loss_pct,
            jitter_s=self._jitter.jitter_s,
            bandwidth_bps=self._delivery.bandwidth_bps,
            spikes=self._spikes.spikes,
            recent_spike_s=self._recent_spike_s(),
        )

    def _recent_spike_s(self) -> float:
        """The latest spike's height, if it was seen within ``SPIKE_MEMORY_S`` of the newest
        record (both on the peer's clock)."""
        detector = self._spikes
        seen = detector.last_spike_s
        if seen is None or self._last_us * 1e-6 - seen > SPIKE_MEMORY_S:
            return 0.0
        return detector.last_peak_s

    # -- output -------------------------------------------------------------------------------

    @property
    def bandwidth_bps(self) -> float | None:
        """The bottleneck bandwidth estimate (see ``LinkStats.bandwidth_mbps``), bit/s."""
        return self._delivery.bandwidth_bps

    @property
    def delivered_bps(self) -> float | None:
        """What the peer received over the last ``DELIVERED_WINDOW_S`` (wire bytes, by its
        clock), from the running totals in its ARRIVALS records; None until records span at
        least half that window."""
        received = self._received
        if len(received) < 2:
            return None
        (t0, b0), (t1, b1) = received[0], received[-1]
        if t1 - t0 < DELIVERED_WINDOW_S / 2:
            return None
        return 8.0 * (b1 - b0) / (t1 - t0)

    @property
    def trend(self) -> TrendlineEstimator:
        """The delay-gradient detector (its ``state`` and ``owd_s`` drive rate control)."""
        return self._trend

    @property
    def quality(self) -> Quality:
        return self._classifier.quality

    def snapshot(
        self,
        now: float | None,
        rtt: RttEstimator,
        loss: LossTracker,
        target_bps: float | None = None,
    ) -> LinkStats:
        """The current estimates. ``now`` (None: the last refresh) dates ``quality_since_s``;
        ``target_bps`` is the rate controller's target, reported beside them."""
        if now is None:
            now = self._last_refresh_s
        measured = rtt.samples > 0
        arrivals = self.samples > 0
        bandwidth = self._delivery.bandwidth_bps
        pattern = self._spikes.spikes
        since = self._classifier.since_s
        return LinkStats(
            rtt_ms=rtt.srtt_s * 1e3 if measured else None,
            rtt_var_ms=rtt.rttvar_s * 1e3 if measured else None,
            min_rtt_ms=rtt.min_s * 1e3 if measured else None,
            jitter_ms=self._jitter.jitter_s * 1e3 if arrivals else None,
            loss_pct=loss.loss_pct,
            loss_total_pct=loss.loss_total_pct,
            burst_loss=loss.burst_loss,
            goodput_mbps=self._goodput_bps(now) / 1e6,
            bandwidth_mbps=None if bandwidth is None else bandwidth / 1e6,
            owd_trend=self._trend.state if arrivals else None,
            queue_delay_ms=self._trend.owd_s * 1e3 if arrivals else None,
            spikes=(
                None
                if pattern is None
                else SpikeStats(
                    period_ms=pattern.period_s * 1e3, amplitude_ms=pattern.amplitude_s * 1e3
                )
            ),
            quality=self._classifier.quality,
            quality_since_s=0.0
            if since is None or not math.isfinite(now)
            else max(0.0, now - since),
            samples=self.samples,
            target_mbps=None if target_bps is None else target_bps / 1e6,
        )

    def _goodput_bps(self, now: float) -> float:
        """Payload acknowledged over the last second or so; it decays once acks stop."""
        history = self._acked
        if len(history) < 2:
            return 0.0
        (t0, b0), (t1, b1) = history[0], history[-1]
        end = max(t1, now) if math.isfinite(now) else t1
        if end - t0 > 2 * GOODPUT_WINDOW_S:
            return 0.0  # nothing acknowledged for a whole window
        return 8.0 * (b1 - b0) / (end - t0) if end > t0 else 0.0
