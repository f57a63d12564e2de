"""One-way-delay trend and periodic latency spikes, from timestamped delay samples.

Like the estimators of :mod:`transport.estimator`, each class takes the time as an argument
(seconds, one clock), keeps bounded state, and reads no clock, socket or random source. Send
times are the sender's clock and receive times the receiver's; only differences of one-way
delays are used, so a constant clock offset cancels out (a drifting one does not quite: at a
typical 50 ppm, 0.5 ms over the 10 s minimum window).

- :class:`TrendlineEstimator` — libwebrtc GCC's delay-gradient (trendline) overuse detector.
- :class:`SpikeDetector` — periodic latency spikes (e.g. Wi-Fi scans) from one-way delays.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from transport.estimator import _WindowedExtremum
from transport.stats import DelayTrend

__all__ = ["DelayTrend", "SpikeDetector", "SpikePattern", "TrendlineEstimator"]


class TrendlineEstimator:
    """libwebrtc GCC's delay-based overuse detector, a port of
    ``modules/congestion_controller/goog_cc/trendline_estimator.cc`` (TrendlineEstimator) and
    of the send-time grouping in ``inter_arrival_delta.cc`` (InterArrivalDelta).

    Packets are grouped into bursts sent within 5 ms (a packet that arrives within 5 ms of the
    group with a negative propagation delta also joins it, up to 100 ms). For consecutive
    groups, ``delta = recv_delta - send_delta`` is accumulated, smoothed (coefficient 0.9) and
    the slope of a least-squares line through the last 20 (arrival time, smoothed delay) points
    is the trend. ``min(n, 60) * slope * 4`` is compared with an adaptive threshold (start
    12.5, ``k_up`` 0.0087, ``k_down`` 0.039, clamped to 6..600, not adapted when
    ``|trend| > threshold + 15``). Overuse needs the trend above the threshold for more than
    10 ms of send time over at least two groups, and a trend that is not decreasing.
    Internally everything is in milliseconds, the unit those constants are tuned for.

    Not ported: the slope cap and sorting field trials (off by default), the network-state
    predictor, and the reset on an arrival-clock jump (our receive times come from one clock).
    """

    __slots__ = (
        "_accumulated_ms",
        "_first_arrival_ms",
        "_group",
        "_history",
        "_last_update_ms",
        "_num_deltas",
        "_overuse_count",
        "_owd_min",
        "_prev_group",
        "_prev_trend",
        "_reordered",
        "_smoothed_ms",
        "_time_over_using_ms",
        "modified_trend",
        "owd_s",
        "state",
        "threshold",
    )

    _GROUP_MS = 5.0  # send-time group length (goog_cc's default kSendTimeGroupLength)
    _BURST_DELTA_MS = 5.0  # inter_arrival_delta.cc kBurstDeltaThreshold
    _MAX_BURST_MS = 100.0  # kMaxBurstDuration
    _REORDERED_RESET = 3  # kReorderedResetThreshold
    _WINDOW = 20  # kDefaultTrendlineWindowSize
    _SMOOTHING = 0.9  # kDefaultTrendlineSmoothingCoeff
    _GAIN = 4.0  # kDefaultTrendlineThresholdGain
    _MIN_DELTAS = 60  # kMinNumDeltas
    _DELTA_COUNTER_MAX = 1000  # kDeltaCounterMax
    _K_UP = 0.0087
    _K_DOWN = 0.039
    _MAX_ADAPT_OFFSET_MS = 15.0  # kMaxAdaptOffsetMs
    _OVERUSING_TIME_MS = 10.0  # kOverUsingTimeThreshold
    _MAX_TIME_DELTA_MS = 100.0  # UpdateThreshold's kMaxTimeDeltaMs

    def __init__(self, *, owd_window_s: float = 10.0) -> None:
        # Groups, as [first_send_ms, send_ms, first_arrival_ms, complete_ms].
        self._group: list[float] | None = None
        self._prev_group: list[float] | None = None
        self._reordered = 0
        self._num_deltas = 0
        self._first_arrival_ms: float | None = None
        self._accumulated_ms = 0.0
        self._smoothed_ms = 0.0
        self._history: deque[tuple[float, float]] = deque(maxlen=self._WINDOW)
        self._prev_trend = 0.0
        self._time_over_using_ms = -1.0
        self._overuse_count = 0
        self._last_update_ms: float | None = None
        self._owd_min = _WindowedExtremum(owd_window_s, owd_window_s / 10, maximum=False)
        self.threshold = 12.5
        """The adaptive threshold the modified trend is compared with."""
        self.modified_trend = 0.0
        """``min(n, 60) * slope * 4``: the number compared with ``threshold``."""
        self.state: DelayTrend = "steady"
        """"rising" (libwebrtc kBwOverusing), "steady" (kBwNormal), "falling" (kBwUnderusing)."""
        self.owd_s = 0.0
        """One-way delay of the latest packet above the minimum of the last ``owd_window_s``:
        the queueing delay, free of the clock offset between the two ends."""

    @property
    def owd_ms(self) -> float:
        """``owd_s`` in milliseconds."""
        return self.owd_s * 1000.0

    def on_packet(self, send_s: float, recv_s: float, size: int) -> None:
        """One delivered packet, in arrival order: send time (sender's clock), receive time
        (receiver's clock), size in bytes. The filter itself does not use the size (neither
        does libwebrtc's); it is taken so the same call feeds :class:`DeliveryRate`."""
        owd = recv_s - send_s
        self._owd_min.insert(recv_s, owd)
        assert self._owd_min.value is not None
        self.owd_s = owd - self._owd_min.value
        send_ms, arrival_ms = send_s * 1000.0, recv_s * 1000.0
        group = self._group
        if group is None:
            self._group = [send_ms, send_ms, arrival_ms, arrival_ms]
            return
        if send_ms < group[0]:
            return  # reordered packet: InterArrivalDelta drops it
        if self._is_new_group(group, send_ms, arrival_ms):
            prev = self._prev_group
            if prev is not None:
                send_delta = group[1] - prev[1]
                recv_delta = group[3] - prev[3]
                if recv_delta < 0:  # the groups were reordered in the network
                    self._reordered += 1
                    if self._reordered >= self._REORDERED_RESET:
                        self._group = self._prev_group = None
                        self._reordered = 0
                    return
                self._reordered = 0
                self._update(recv_delta, send_delta, arrival_ms)
            self._prev_group = group
            self._group = [send_ms, send_ms, arrival_ms, arrival_ms]
        else:
            group[1] = max(group[1], send_ms)
            group[3] = arrival_ms

    def _is_new_group(self, group: list[float], send_ms: float, arrival_ms: float) -> bool:
        # InterArrivalDelta::BelongsToBurst, then NewTimestampGroup.
        arrival_delta = arrival_ms - group[3]
        send_delta = send_ms - group[1]
        if send_delta == 0:
            return False
        if (
            arrival_delta - send_delta < 0
            and arrival_delta <= self._BURST_DELTA_MS
            and arrival_ms - group[2] < self._MAX_BURST_MS
        ):
            return False
        return send_ms - group[0] > self._GROUP_MS

    def _update(self, recv_delta_ms: float, send_delta_ms: float, arrival_ms: float) -> None:
        # TrendlineEstimator::UpdateTrendline
        self._num_deltas = min(self._num_deltas + 1, self._DELTA_COUNTER_MAX)
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self._accumulated_ms += recv_delta_ms - send_delta_ms
        self._smoothed_ms = (
            self._SMOOTHING * self._smoothed_ms + (1 - self._SMOOTHING) * self._accumulated_ms
        )
        self._history.append((arrival_ms - self._first_arrival_ms, self._smoothed_ms))
        trend = self._prev_trend
        if len(self._history) == self._WINDOW:
            slope = _linear_fit_slope(self._history)
            if slope is not None:
                trend = slope
        self._detect(trend, send_delta_ms, arrival_ms)

    def _detect(self, trend: float, send_delta_ms: float, now_ms: float) -> None:
        # TrendlineEstimator::Detect
        if self._num_deltas < 2:
            self.state = "steady"
            return
        modified = min(self._num_deltas, self._MIN_DELTAS) * trend * self._GAIN
        self.modified_trend = modified
        if modified > self.threshold:
            if self._time_over_using_ms == -1:
                # Assume we have been over-using for half the time since the last sample.
                self._time_over_using_ms = send_delta_ms / 2
            else:
                self._time_over_using_ms += send_delta_ms
            self._overuse_count += 1
            if (
                self._time_over_using_ms > self._OVERUSING_TIME_MS
                and self._overuse_count > 1
                and trend >= self._prev_trend
            ):
                self._time_over_using_ms = 0
                self._overuse_count = 0
                self.state = "rising"
        elif modified < -self.threshold:
            self._time_over_using_ms = -1
            self._overuse_count = 0
            self.state = "falling"
        else:
            self._time_over_using_ms = -1
            self._overuse_count = 0
            self.state = "steady"
        self._prev_trend = trend
        self._update_threshold(modified, now_ms)

    def _update_threshold(self, modified: float, now_ms: float) -> None:
        # TrendlineEstimator::UpdateThreshold
        if self._last_update_ms is None:
            self._last_update_ms = now_ms
        if abs(modified) > self.threshold + self._MAX_ADAPT_OFFSET_MS:
            # Do not adapt to big latency spikes, e.g. from a sudden capacity drop.
            self._last_update_ms = now_ms
            return
        k = self._K_DOWN if abs(modified) < self.threshold else self._K_UP
        time_delta_ms = min(now_ms - self._last_update_ms, self._MAX_TIME_DELTA_MS)
        self.threshold += k * (abs(modified) - self.threshold) * time_delta_ms
        self.threshold = min(max(self.threshold, 6.0), 600.0)
        self._last_update_ms = now_ms


def _linear_fit_slope(points: deque[tuple[float, float]]) -> float | None:
    n = len(points)
    x_avg = sum(p[0] for p in points) / n
    y_avg = sum(p[1] for p in points) / n
    numerator = sum((x - x_avg) * (y - y_avg) for x, y in points)
    denominator = sum((x - x_avg) ** 2 for x, _ in points)
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikePattern:
    """A periodic latency spike: its period and its median peak height above the baseline."""

    period_s: float
    amplitude_s: float


class SpikeDetector:
    """Periodic latency spikes (Wi-Fi background scans stall a link for tens of milliseconds
    about once a second) from one-way delay samples, e.g. ``TrendlineEstimator.owd_s``.

    Baseline and noise, from the samples of the last ``baseline_window_s`` (at most 32 per
    ``bucket_s``, evenly spread order statistics, so memory is bounded): the baseline is their
    median, the spread their 90th percentile minus the median. Both are robust to spikes,
    which hold a few percent of the samples, and the spread, unlike the RFC 3550 jitter,
    follows the upper tail that matters here even when the delay noise is one-sided (a FIFO
    queue's). A spike starts when a sample exceeds the baseline by ``max(min_excess_s,
    spread_factor * spread)`` (4 spreads: 5.1 standard deviations of normal noise; 4.6 of
    half-normal noise's scale) and ends once the excess has stayed below half that for
    ``merge_s`` (so a stall made of several bursts is one spike); its peak excess is its
    height.

    Period: the onset times of the last ``intervals + 1`` spikes must lie within
    ``tolerance`` of a period of an evenly spaced grid (least-squares fit of onset time on
    spike index). A grid fit rather than interval agreement because phase jitter of ±10 % of
    the period makes consecutive intervals differ by up to 20 % while the grid residuals stay
    within 10 %. Simulated: with 6 intervals and 15 %, onsets with ±10 % phase jitter pass
    every time, and random (Poisson) onsets pass with p ≈ 1e-4 per onset; requiring only 3
    intervals would let Poisson onsets pass with p ≈ 5e-2 (3 intervals within 15 % of their
    median: 1e-2, and only 71 % of phase-jittered onsets). Once found, the pattern is refreshed
    by every onset that lands within ``tolerance`` of the grid and forgotten after
    ``forget_periods`` periods without one (checked on each sample).
    """

    __slots__ = (
        "_bucket",
        "_bucket_index",
        "_bucket_s",
        "_buckets",
        "_forget_periods",
        "_intervals",
        "_last_fit_s",
        "_merge_s",
        "_min_excess_s",
        "_onsets",
        "_peaks",
        "_spike_end_s",
        "_spike_limit_s",
        "_spike_onset_s",
        "_spike_peak_s",
        "_spread_factor",
        "_tolerance",
        "baseline_s",
        "last_peak_s",
        "last_spike_s",
        "spikes",
        "spread_s",
    )

    _KEEP = 32  # samples kept per bucket

    def __init__(
        self,
        *,
        bucket_s: float = 0.1,
        baseline_window_s: float = 2.0,
        min_excess_s: float = 0.005,
        spread_factor: float = 4.0,
        merge_s: float = 0.1,
        intervals: int = 6,
        tolerance: float = 0.15,
        forget_periods: float = 3.0,
    ) -> None:
        if not 0 < bucket_s < baseline_window_s or intervals < 2 or not 0 < tolerance < 0.5:
            raise ValueError("need 0 < bucket_s < baseline_s, intervals >= 2, tolerance < 0.5")
        self._bucket_s = bucket_s
        self._bucket: list[float] = []
        self._bucket_index: int | None = None
        self._buckets: deque[list[float]] = deque(  # each bucket's samples, decimated
            maxlen=max(1, round(baseline_window_s / bucket_s))
        )
        self._min_excess_s = min_excess_s
        self._spread_factor = spread_factor
        self._merge_s = merge_s
        self._intervals = intervals
        self._tolerance = tolerance
        self._forget_periods = forget_periods
        self._spike_onset_s: float | None = None
        self._spike_end_s: float | None = None
        self._spike_peak_s = 0.0
        self._spike_limit_s = 0.0  # the onset threshold, kept for the end test
        self._onsets: deque[tuple[float, float]] = deque(maxlen=intervals + 1)
        self._peaks: deque[float] = deque(maxlen=intervals + 1)
        self._last_fit_s = 0.0
        self.baseline_s: float | None = None
        """Typical delay (None until the first bucket closes)."""
        self.spread_s = 0.0
        """90th percentile of the delay minus the baseline."""
        self.spikes: SpikePattern | None = None
        """The current periodic pattern, or None."""
        self.last_spike_s: float | None = None
        """When the latest spike (periodic or not) was last seen rising: its onset, or the
        sample that raised its peak."""
        self.last_peak_s = 0.0
        """That spike's height so far (excess over the baseline)."""

    def on_sample(self, now: float, owd_s: float) -> None:
        """One delay sample (any constant offset is fine) taken at ``now``, in time order."""
        index = math.floor(now / self._bucket_s)
        if index != self._bucket_index:
            if self._bucket:
                self._close_bucket()
            self._bucket.clear()
            self._bucket_index = index
        self._bucket.append(owd_s)

        onset = self._spike_onset_s
        if self.baseline_s is not None:
            excess = owd_s - self.baseline_s
            if onset is None:
                limit = max(self._min_excess_s, self._spread_factor * self.spread_s)
                if excess > limit:
                    self._spike_onset_s, self._spike_peak_s = now, excess
                    self._spike_limit_s = limit
                    self.last_spike_s, self.last_peak_s = now, excess
            elif excess > self._spike_limit_s / 2:
                if excess > self._spike_peak_s:
                    self._spike_peak_s = excess
                    self.last_spike_s, self.last_peak_s = now, excess
                self._spike_end_s = None  # not over yet (or resumed within merge_s)
            elif self._spike_end_s is None:
                self._spike_end_s = now
            elif now - self._spike_end_s >= self._merge_s:
                self._on_spike(onset, self._spike_peak_s)
                self._spike_onset_s = self._spike_end_s = None

        pattern = self.spikes
        if pattern and now - self._last_fit_s > self._forget_periods * pattern.period_s:
            self.spikes = None
            self._onsets.clear()

    def _close_bucket(self) -> None:
        samples = sorted(self._bucket)
        n = len(samples)
        if n > self._KEEP:
            samples = [samples[i * (n - 1) // (self._KEEP - 1)] for i in range(self._KEEP)]
        self._buckets.append(samples)
        pooled = sorted(x for bucket in self._buckets for x in bucket)
        self.baseline_s = pooled[len(pooled) // 2]
        self.spread_s = pooled[(len(pooled) - 1) * 9 // 10] - self.baseline_s

    def _on_spike(self, onset_s: float, peak_s: float) -> None:
        pattern = self.spikes
        if pattern is not None:
            cycles = (onset_s - self._last_fit_s) / pattern.period_s
            if round(cycles) >= 1 and abs(cycles - round(cycles)) <= self._tolerance:
                self._last_fit_s = onset_s
                self._peaks.append(peak_s)
                self.spikes = SpikePattern(
                    period_s=pattern.period_s, amplitude_s=statistics.median(self._peaks)
                )
        self._onsets.append((onset_s, peak_s))
        if len(self._onsets) <= self._intervals:
            return
        times = [t for t, _ in self._onsets]
        period = _grid_period(times, self._tolerance)
        if period is not None:
            self._peaks.clear()
            self._peaks.extend(p for _, p in self._onsets)
            self.spikes = SpikePattern(period_s=period, amplitude_s=statistics.median(self._peaks))
            self._last_fit_s = onset_s


def _grid_period(times: list[float], tolerance: float) -> float | None:
    """The period of the least-squares line through (index, time), if every time lies within
    ``tolerance`` periods of it; else None."""
    n = len(times)
    k_avg = (n - 1) / 2
    t_avg = sum(times) / n
    period = sum((k - k_avg) * (t - t_avg) for k, t in enumerate(times)) / sum(
        (k - k_avg) ** 2 for k in range(n)
    )
    if period <= 0:
        return None
    for k, t in enumerate(times):
        if abs(t - (t_avg + (k - k_avg) * period)) > tolerance * period:
            return None
    return period
