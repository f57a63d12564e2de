"""A Google-Congestion-Control-style rate controller (libwebrtc ``goog_cc``), sans-I/O.

Two estimates, and the target bitrate is the lower one, clamped to ``[min_bps, max_bps]``:

- delay based: ``modules/remote_bitrate_estimator/aimd_rate_control.cc`` (AimdRateControl) as
  ``modules/congestion_controller/goog_cc/delay_based_bwe.cc`` drives it, with the link
  capacity kept by ``goog_cc/link_capacity_estimator.cc``;
- loss based: the classic estimator of ``goog_cc/send_side_bandwidth_estimation.cc``.

The delay-gradient detector itself is :class:`transport.delaytrend.TrendlineEstimator`; its
state arrives in :class:`~transport.congestion.LinkSignals`.

Deviations from libwebrtc, on purpose:

1. Fast start. libwebrtc sends probe clusters to find the capacity at the start; our transport
   has no probing packets, so until the first overuse (or the first loss report above
   ``high_loss_fraction``) the delay-based estimate grows ``startup_gain_per_s`` per second
   (still capped at 1.5 x the delivered rate + 10 kbit/s), and the loss-based estimate trusts
   it, as libwebrtc's does in its 2 s start phase. For the same reason the fast start comes
   back when the delivered rate exceeds the link capacity estimate by more than 3 standard
   deviations (the link got faster; libwebrtc drops the estimate there and would find the new
   capacity with probes, while 8 %/s alone takes 20 s to go from 2 to 10 Mbit/s).
2. The loss-based estimate is not capped by the delay-based one. In libwebrtc it is, so every
   delay back-off lowers it too, and under steady 2-10 % random loss (where it may only hold)
   the target can then only ratchet down. Here a back-off moves the delay-based estimate
   alone, which climbs back up to the loss-based one. So the loss-based estimate is an upper
   bound that only heavy loss lowers: low loss raises it to 1.08 x the minimum target of the
   last second when that is higher (libwebrtc's increase), never lowers it.
3. A retransmission timeout that finds the link stalled halves the target and forgets the
   link capacity estimate; libwebrtc has no such input. Stalled means that the packets lost
   since the last acknowledgement add up to ``stall_packets`` or more, or that it is the
   second timeout with no acknowledgement between. A timeout that finds one or two packets
   lost is most often the lost tail of a burst (a keyframe followed by silence, so nothing
   later reveals the loss) and says nothing about the rate: halving on it took a
   150 KB-every-0.5 s keyframe stream at 1 % loss from 1 Mbit/s to 240 kbit/s in 5 s.
4. The loss thresholds apply to an exponential average of ``LinkSignals.loss_fraction`` over
   ``loss_smoothing_s``. libwebrtc decides on each loss report of 20 packets or more; our
   signals come every 50 ms or so over an overlapping window of a few hundred packets at
   most, and with the 2-10 % hold a back-off that noise triggers is never taken back while the
   loss stays above 2 %: 5 % random loss would ratchet the rate down.
5. Overload backstop. The trendline detector gives no verdict until it holds 20 send-time
   groups; on a link that carries a few packets a second (a cellular dead zone) that takes
   many seconds while the queue grows by the difference. When the standing queue exceeds
   ``overload_queue_s`` and the receiver gets less than half the delay-based estimate, the
   controller backs off as on overuse, whatever the detector says. libwebrtc's probes and
   its congestion-window pushback cover this case.
6. The in-flight cap is sized by the smallest RTT seen (RFC 9002 ``min_rtt``), as
   libwebrtc's congestion window uses the minimum of recent feedback RTTs: a smoothed RTT that
   a standing queue has inflated would let the window, and so the queue, grow further.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from transport.congestion import LinkSignals

if TYPE_CHECKING:
    from transport.congestion import CongestionController

__all__ = ["GccConfig", "GoogCC", "RateControlState"]

RateControlState = Literal["increase", "hold", "decrease"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GccConfig:
    """Settings of :class:`GoogCC`. Rates in bits per second."""

    start_bps: float = 1e6
    min_bps: float = 100e3
    max_bps: float = 100e6
    beta: float = 0.85
    """Delay back-off: the new rate is ``beta`` x the delivered rate (kDefaultBackoffFactor)."""
    increase_per_s: float = 0.08
    """Multiplicative increase far from the link capacity, and the loss-based increase
    (aimd_rate_control.cc alpha 1.08; send_side_bandwidth_estimation.cc 1.08)."""
    startup_gain_per_s: float = 2.0
    """Fast-start growth factor per second (our deviation 1)."""
    low_loss_fraction: float = 0.02
    """Below this the loss-based estimate may grow (kDefaultLowLossThreshold)."""
    high_loss_fraction: float = 0.10
    """Above this it backs off by ``1 - loss / 2`` (kDefaultHighLossThreshold)."""
    loss_decrease_interval_s: float = 0.3
    """Loss back-offs at most once per this + RTT (kBweDecreaseInterval)."""
    loss_smoothing_s: float = 1.0
    """Time constant of the exponential average the loss thresholds are applied to (our
    deviation 4)."""
    pacing_factor: float = 1.25
    """Pacing rate over target rate. libwebrtc uses 2.5 (kDefaultPaceMultiplier). In our
    closed loop (tests/test_gcc.py: 30 fps, 10 ms each way, 100-packet drop-tail buffer,
    seven links of 1.5 to 14 Mbit/s, mean over 10-40 s) 1.25 against 2.5 gave: even frames,
    the same median frame delivery time (41 ms) and p95 51 ms against 63 ms, with a bottleneck
    queue half as deep (p95 16 ms against 34 ms) for a target of 92 % of the link against 94 %;
    with a 5x keyframe every 2 s, a queue a fifth as deep (p95 14 ms against 75 ms), a higher
    target (83 % against 79 %) and no drop-tail losses (2.5 lost 17 frames a run), but frames
    behind a keyframe wait longer at the sender (p95 frame time 118 ms against 105 ms). Near
    the capacity, faster pacing only moves the sender's queue into the bottleneck, where the
    delay detector sees it and other flows share it. 1.0 is too slow: every frame then takes a
    whole frame interval to leave."""
    stall_packets: int = 4
    """Packets of ``mss_bytes`` lost since the last acknowledgement from which a timeout
    counts as a stall (deviation 3)."""
    overload_queue_s: float = 0.25
    """Standing queue above which a delivered rate under half the estimate backs off without
    waiting for the delay detector (deviation 5)."""
    window_rtt_gain: float = 2.0
    """The in-flight cap is this x target x (min RTT + 100 ms): a safety net, not the
    limit (deviation 6)."""
    min_window_bytes: int = 16 * 1200
    mss_bytes: int = 1200
    """Packet size assumed by the near-capacity additive increase (kPacketSize)."""
    initial_rtt_s: float = 0.1
    """RTT assumed until the first signal carries one."""

    def __post_init__(self) -> None:
        rates = (self.start_bps, self.min_bps, self.max_bps)
        if not all(math.isfinite(r) and r > 0 for r in rates):
            raise ValueError("start_bps, min_bps and max_bps must be finite and > 0")
        if not self.min_bps <= self.start_bps <= self.max_bps:
            raise ValueError("need min_bps <= start_bps <= max_bps")
        if not 0 < self.beta < 1:
            raise ValueError("beta must be in (0, 1)")
        if not 0 < self.increase_per_s <= 1:
            raise ValueError("increase_per_s must be in (0, 1]")
        if not (math.isfinite(self.startup_gain_per_s) and self.startup_gain_per_s >= 1):
            raise ValueError("startup_gain_per_s must be finite and >= 1")
        if not 0 <= self.low_loss_fraction <= self.high_loss_fraction < 1:
            raise ValueError("need 0 <= low_loss_fraction <= high_loss_fraction < 1")
        if not (
            math.isfinite(self.loss_decrease_interval_s) and self.loss_decrease_interval_s >= 0
        ):
            raise ValueError("loss_decrease_interval_s must be finite and >= 0")
        if not (math.isfinite(self.loss_smoothing_s) and self.loss_smoothing_s >= 0):
            raise ValueError("loss_smoothing_s must be finite and >= 0")
        if not (math.isfinite(self.pacing_factor) and self.pacing_factor >= 1):
            raise ValueError("pacing_factor must be finite and >= 1")
        if self.stall_packets < 1:
            raise ValueError("stall_packets must be >= 1")
        if not (math.isfinite(self.overload_queue_s) and self.overload_queue_s > 0):
            raise ValueError("overload_queue_s must be finite and > 0")
        if not (math.isfinite(self.window_rtt_gain) and self.window_rtt_gain > 0):
            raise ValueError("window_rtt_gain must be finite and > 0")
        if self.mss_bytes < 1 or self.min_window_bytes < self.mss_bytes:
            raise ValueError("need mss_bytes >= 1 and min_window_bytes >= mss_bytes")
        if not (math.isfinite(self.initial_rtt_s) and self.initial_rtt_s > 0):
            raise ValueError("initial_rtt_s must be finite and > 0")


class _LinkCapacity:
    """goog_cc/link_capacity_estimator.cc: an exponential average of the delivered rate at
    each overuse, with a normalised variance; in kbit/s, the unit its constants are tuned
    for."""

    __slots__ = ("deviation", "estimate_kbps")

    _ALPHA = 0.05  # OnOveruseDetected's smoothing

    def __init__(self) -> None:
        self.estimate_kbps: float | None = None
        self.deviation = 0.4  # normalised variance, kbit/s; deviation_kbps_'s initial value

    def _std_kbps(self, estimate_kbps: float) -> float:
        return math.sqrt(self.deviation * estimate_kbps)

    def upper_bps(self) -> float:
        est = self.estimate_kbps
        return math.inf if est is None else (est + 3 * self._std_kbps(est)) * 1e3

    def lower_bps(self) -> float:
        est = self.estimate_kbps
        return 0.0 if est is None else max(0.0, est - 3 * self._std_kbps(est)) * 1e3

    def on_overuse(self, delivered_bps: float) -> None:
        sample = delivered_bps / 1e3
        est = self.estimate_kbps
        est = sample if est is None else (1 - self._ALPHA) * est + self._ALPHA * sample
        self.estimate_kbps = est
        error = est - sample
        deviation = (1 - self._ALPHA) * self.deviation + self._ALPHA * error * error / max(est, 1)
        # Clamped as libwebrtc does: 0.4 ~ 14 kbit/s and 2.5 ~ 35 kbit/s at 500 kbit/s.
        self.deviation = min(max(deviation, 0.4), 2.5)


class GoogCC:
    """GCC-style rate control: delay-based AIMD and classic loss-based estimation (see the
    module docstring for the sources and our deviations). Implements
    :class:`~transport.congestion.CongestionController`.

    Feed it :meth:`on_link` whenever delay and loss feedback arrives; read
    :attr:`target_bps` for the encoder and :attr:`pacing_bps` for the pacer. Acknowledgements
    and single losses do not move the rate (loss arrives as ``LinkSignals.loss_fraction``);
    :attr:`window_bytes` only caps the bytes in flight, at about two rate x RTT products.
    Deterministic: no clock and no randomness, all time comes from the arguments.
    """

    __slots__ = (
        "_capacity",
        "_config",
        "_delay_bps",
        "_delivered_bps",
        "_last_change_s",
        "_last_decrease_s",
        "_last_link_s",
        "_last_loss_decrease_s",
        "_loss",
        "_loss_bps",
        "_lost_since_ack",
        "_min_rtt_s",
        "_pacing_bps",
        "_rtt_s",
        "_startup",
        "_target_bps",
        "_target_history",
        "_timeouts",
        "_window_bytes",
        "state",
    )

    def __init__(self, config: GccConfig | None = None) -> None:
        self._config = config = config if config is not None else GccConfig()
        self._delay_bps = config.start_bps
        self._loss_bps = config.start_bps
        self._capacity = _LinkCapacity()
        self._rtt_s = config.initial_rtt_s
        self._min_rtt_s: float | None = None
        # Latest delivered rate; libwebrtc starts its "latest estimated throughput" at the
        # start rate, which caps the first increases at 1.5 x start + 10 kbit/s.
        self._delivered_bps = config.start_bps
        self._last_change_s = -math.inf  # time_last_bitrate_change_
        self._last_decrease_s = -math.inf
        self._last_loss_decrease_s = -math.inf
        self._last_link_s: float | None = None
        self._loss = 0.0  # smoothed loss fraction
        self._target_history: deque[tuple[float, float]] = deque()  # (time, target), min-queue
        self._startup = True
        self._timeouts = 0  # retransmission timeouts since the last acknowledgement
        self._lost_since_ack = 0  # bytes declared lost since then
        self.state: RateControlState = "hold"
        """The AIMD state: "increase", "hold", or "decrease" after a delay back-off (libwebrtc
        holds from there at once; we keep the name until a signal moves it, for stats)."""
        self._target_bps = self._pacing_bps = 0.0
        self._window_bytes = 0
        self._refresh()

    # -- what the sender reads -----------------------------------------------------------------

    @property
    def target_bps(self) -> float:
        """The bitrate the encoder should produce."""
        return self._target_bps

    @property
    def pacing_bps(self) -> float:
        """The rate the pacer should release packets at: ``pacing_factor`` x target."""
        return self._pacing_bps

    @property
    def window_bytes(self) -> int:
        """Safety cap on bytes in flight: ``max(min_window_bytes, window_rtt_gain x target x
        (min RTT + 100 ms) / 8)``; the smoothed RTT until a minimum is known."""
        return self._window_bytes

    @property
    def delay_based_bps(self) -> float:
        """The delay-based (AIMD) estimate."""
        return self._delay_bps

    @property
    def loss_based_bps(self) -> float:
        """The loss-based estimate."""
        return self._loss_bps

    @property
    def link_capacity_bps(self) -> float | None:
        """The link capacity estimate (average delivered rate at overuse), if any."""
        est = self._capacity.estimate_kbps
        return None if est is None else est * 1e3

    @property
    def loss_fraction(self) -> float:
        """The smoothed loss fraction the loss-based estimate acts on."""
        return self._loss

    @property
    def in_startup(self) -> bool:
        """True until the first overuse or heavy loss ends the fast start."""
        return self._startup

    # -- inputs ----------------------------------------------------------------------------------

    def on_acked(self, size: int, sent_at: float, now: float) -> None:
        """The path answers: the rate does not move (that is :meth:`on_link`'s), but the
        losses and timeouts so far were no stall."""
        self._timeouts = 0
        self._lost_since_ack = 0

    def on_lost(self, size: int, sent_at: float, now: float) -> None:
        """Counted only to tell a stall from a lost tail at a timeout; the rate reacts to loss
        through ``LinkSignals.loss_fraction``, over a window."""
        self._lost_since_ack += size

    def on_timeout(self, now: float) -> None:
        """When the link looks stalled (deviation 3): halve the target (not below ``min_bps``),
        forget the link capacity, end the fast start and hold until the next signal says
        "steady"."""
        self._timeouts += 1
        config = self._config
        if self._timeouts < 2 and self._lost_since_ack < config.stall_packets * config.mss_bytes:
            return
        halved = max(self._config.min_bps, 0.5 * self._target_bps)
        self._delay_bps = halved
        self._loss_bps = min(self._loss_bps, halved)
        self._capacity.estimate_kbps = None
        self._startup = False
        self.state = "hold"
        self._last_change_s = self._last_decrease_s = now
        self._target_history.clear()
        self._refresh()

    def on_link(self, signals: LinkSignals) -> None:
        """Fresh feedback: update both estimates, then the target, pacing rate and window."""
        now = signals.now
        if signals.rtt_s is not None and signals.rtt_s > 0:
            self._rtt_s = signals.rtt_s
        if signals.min_rtt_s is not None and signals.min_rtt_s > 0:
            self._min_rtt_s = signals.min_rtt_s
        tau, last = self._config.loss_smoothing_s, self._last_link_s
        if tau == 0:
            self._loss = signals.loss_fraction
        elif last is not None and now > last:  # the first signal only starts the clock
            self._loss += (1 - math.exp((last - now) / tau)) * (signals.loss_fraction - self._loss)
        self._last_link_s = now
        self._update_delay_based(signals)
        self._update_loss_based(now, min(max(self._loss, 0.0), 1.0))
        self._refresh()

    # -- delay based -----------------------------------------------------------------------------

    def _update_delay_based(self, signals: LinkSignals) -> None:
        now = signals.now
        delivered = signals.delivered_bps
        if delivered is not None:
            self._delivered_bps = delivered
        overloaded = (
            delivered is not None
            and signals.queue_delay_s > self._config.overload_queue_s
            and delivered < 0.5 * self._delay_bps
        )
        if signals.trend == "rising" or overloaded:
            # delay_based_bwe.cc MaybeUpdateEstimate: on overuse, back off only if it is time
            # to reduce further; with no delivered rate yet, halve at most every 200 ms.
            if delivered is not None:
                if self._time_to_reduce_further(now, delivered):
                    self._decrease(now, delivered)
                    self._startup = False
            elif now - self._last_decrease_s >= 0.2:
                self._set_delay(max(self._delay_bps / 2, self._config.min_bps))
                self._last_change_s = self._last_decrease_s = now
                self._startup = False
                self.state = "decrease"
            return
        # aimd_rate_control.cc ChangeState: underuse holds; normal turns Hold (which a
        # decrease has become) into Increase.
        if signals.trend == "falling":
            self.state = "hold"
        elif self.state != "increase":
            self.state = "increase"
            self._last_change_s = now
        if self.state == "increase":
            self._increase(now)

    def _time_to_reduce_further(self, now: float, delivered_bps: float) -> bool:
        # AimdRateControl::TimeToReduceFurther: once per RTT (clamped to 10..200 ms), or at
        # once if the delivered rate fell below half the estimate.
        interval = min(max(self._rtt_s, 0.010), 0.200)
        return now - self._last_change_s >= interval or delivered_bps < 0.5 * self._delay_bps

    def _decrease(self, now: float, delivered_bps: float) -> None:
        # AimdRateControl::ChangeBitrate, kRcDecrease.
        config, capacity = self._config, self._capacity
        new = config.beta * delivered_bps  # slightly below what got through: drain the queue
        if new > self._delay_bps and capacity.estimate_kbps is not None:
            new = config.beta * capacity.estimate_kbps * 1e3
        if new < self._delay_bps:  # never increase while overusing
            self._set_delay(new)
        if delivered_bps < capacity.lower_bps():
            capacity.estimate_kbps = None  # far from the old capacity: start afresh
        capacity.on_overuse(delivered_bps)
        self.state = "decrease"  # then hold until the queues have drained
        self._last_change_s = self._last_decrease_s = now

    def _increase(self, now: float) -> None:
        # AimdRateControl::ChangeBitrate, kRcIncrease.
        config, capacity = self._config, self._capacity
        delivered = self._delivered_bps
        if delivered > capacity.upper_bps():
            # The link got faster: forget its capacity, and fast-start again (deviation 1).
            capacity.estimate_kbps = None
            self._startup = True
        limit = 1.5 * delivered + 10e3  # do not run far ahead of what gets through
        current = self._delay_bps
        dt = max(0.0, now - self._last_change_s)
        if current < limit:
            if self._startup:  # our fast start (deviation 1)
                new = current * config.startup_gain_per_s ** min(dt, 1.0)
            elif capacity.estimate_kbps is not None:  # near the capacity: additive
                new = current + self._near_max_increase_bps_per_s() * dt
            else:  # MultiplicativeRateIncrease, at least 1 kbit/s
                step = current * ((1 + config.increase_per_s) ** min(dt, 1.0) - 1)
                new = current + max(step, 1e3)
            self._set_delay(min(new, limit))
        self._last_change_s = now

    def _near_max_increase_bps_per_s(self) -> float:
        # AimdRateControl::GetNearMaxIncreaseRateBpsPerSecond: one average packet of a 30 fps
        # stream per response time (RTT + 100 ms for the overuse detector to react; libwebrtc
        # doubles it under its default adaptive-threshold trial, we do not), >= 4 kbit/s/s.
        frame_bits = self._delay_bps / 30
        packets_per_frame = math.ceil(frame_bits / (self._config.mss_bytes * 8))
        packet_bits = frame_bits / max(packets_per_frame, 1)
        return max(4e3, packet_bits / (self._rtt_s + 0.100))

    def _set_delay(self, bps: float) -> None:
        config = self._config
        self._delay_bps = min(max(bps, config.min_bps), config.max_bps)

    # -- loss based ------------------------------------------------------------------------------

    def _update_loss_based(self, now: float, loss: float) -> None:
        # send_side_bandwidth_estimation.cc UpdateEstimate (the classic estimator).
        config = self._config
        history = self._target_history
        target = min(self._delay_bps, self._loss_bps)
        # UpdateMinHistory: the minimum target of the last second, as a monotonic queue.
        while history and now - history[0][0] + 0.001 > 1.0:
            history.popleft()
        while history and target <= history[-1][1]:
            history.pop()
        history.append((now, target))
        if loss > config.high_loss_fraction:
            self._startup = False
            # Back off at most once per kBweDecreaseInterval + RTT: rate x (1 - loss / 2).
            if now - self._last_loss_decrease_s >= config.loss_decrease_interval_s + self._rtt_s:
                self._last_loss_decrease_s = now
                self._loss_bps = max(config.min_bps, target * (1 - 0.5 * loss))
        elif self._startup:
            # The start phase trusts the delay-based estimate while loss is not heavy.
            self._loss_bps = max(self._loss_bps, self._delay_bps)
        elif loss <= config.low_loss_fraction:
            # 8 % above the lowest target of the last second (+1 kbit/s not to get stuck).
            grown = history[0][1] * (1 + config.increase_per_s) + 1e3
            self._loss_bps = min(max(self._loss_bps, grown), config.max_bps)
        # 2-10 %: hold.

    def _refresh(self) -> None:
        config = self._config
        target = min(max(min(self._delay_bps, self._loss_bps), config.min_bps), config.max_bps)
        self._target_bps = target
        self._pacing_bps = target * config.pacing_factor
        base_rtt = self._rtt_s if self._min_rtt_s is None else self._min_rtt_s
        window = config.window_rtt_gain * target * (base_rtt + 0.100) / 8
        self._window_bytes = max(config.min_window_bytes, int(window))


if TYPE_CHECKING:  # mypy checks here that GoogCC implements the Protocol
    _CONFORMS: CongestionController = GoogCC()
