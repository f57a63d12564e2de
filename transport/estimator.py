"""Per-packet link statistics: small pure classes fed with timestamped samples.

Each class takes samples with the time as an argument (seconds, one clock) and keeps bounded
state; none of them reads a clock, touches a socket or draws random numbers. Send times come
from the sender's clock and receive times from the receiver's: the estimators only ever use
differences of one-way delays, so a constant offset between the two clocks cancels out (a
drifting one does not quite: at a typical 50 ppm, 0.5 ms over the 10 s minimum windows).

- :class:`InterarrivalJitter` — RFC 3550 §6.4.1 interarrival jitter.
- :class:`LossTracker` — recent and total loss, and mean loss-burst length.
- :class:`DeliveryRate` — bottleneck bandwidth from receive-side delivery, BBR-style.

The one-way-delay trend and periodic spikes are in :mod:`transport.delaytrend`, the link-quality
class built from all of these in :mod:`transport.quality`.
"""

from __future__ import annotations

import math
from collections import deque


class _WindowedExtremum:
    """Max (or min) of the samples of the last ``window_s``, kept as one extremum per bucket so
    memory is bounded by the bucket count, not by the sample rate. The window is measured in
    whole buckets, so it spans between ``window_s - bucket_s`` and ``window_s``."""

    __slots__ = ("_bucket_s", "_buckets", "_count", "_sign", "value")

    def __init__(self, window_s: float, bucket_s: float, *, maximum: bool) -> None:
        self._bucket_s = bucket_s
        self._count = max(1, math.ceil(window_s / bucket_s))
        self._sign = 1.0 if maximum else -1.0
        self._buckets: deque[list[float]] = deque()  # [bucket index, signed extremum]
        self.value: float | None = None

    @property
    def filled(self) -> int:
        """How many buckets of the window hold a sample."""
        return len(self._buckets)

    def insert(self, now: float, value: float) -> None:
        index = math.floor(now / self._bucket_s)
        signed = value * self._sign
        buckets = self._buckets
        if buckets and index <= buckets[-1][0]:  # same bucket (or a clock step back)
            buckets[-1][1] = max(buckets[-1][1], signed)
        else:
            buckets.append([index, signed])
        if self.value is None or signed > self.value * self._sign:
            self.value = value
        self.expire(now)

    def expire(self, now: float) -> None:
        """Forget the buckets that have left the window at ``now``."""
        oldest = math.floor(now / self._bucket_s) - self._count
        buckets = self._buckets
        if buckets and buckets[0][0] <= oldest:
            while buckets and buckets[0][0] <= oldest:
                buckets.popleft()
            self.value = max(b[1] for b in buckets) * self._sign if buckets else None


class InterarrivalJitter:
    """RFC 3550 §6.4.1 interarrival jitter, in seconds instead of RTP timestamp units.

    ``D = (R_j - R_i) - (S_j - S_i)`` for consecutive packets in *arrival* order, and
    ``J += (|D| - J) / 16`` (the gain 1/16 and the arrival-order rule are the RFC's; A.8 shows
    the same computation). For i.i.d. normal transit times with standard deviation s,
    ``E|D| = 2 s / sqrt(pi) ≈ 1.13 s``, which J converges to.
    """

    __slots__ = ("_transit_s", "jitter_s", "samples")

    def __init__(self) -> None:
        self._transit_s: float | None = None
        self.jitter_s = 0.0
        self.samples = 0

    def on_packet(self, send_s: float, recv_s: float) -> None:
        """One packet, in arrival order: its send time (sender's clock) and arrival time."""
        transit = recv_s - send_s
        if self._transit_s is not None:
            self.jitter_s += (abs(transit - self._transit_s) - self.jitter_s) / 16
            self.samples += 1
        self._transit_s = transit


class _LossBucket:
    __slots__ = ("index", "lost", "runs", "total")

    def __init__(self, index: int) -> None:
        self.index = index
        self.total = 0
        self.lost = 0
        self.runs = 0  # loss runs that *start* in this bucket


class LossTracker:
    """Packet loss over a recent window, over the whole session, and mean loss-burst length.

    Outcomes are counted in buckets of ``bucket_s`` (memory is ``window_s / bucket_s`` buckets
    whatever the packet rate). The window is adaptive, after ADWIN (Bifet & Gavaldà, "Learning
    from Time-Changing Data with Adaptive Windowing", SDM 2007): it grows to ``window_s`` while
    the loss rate is stationary, and whenever a bucket closes every split of the window into
    older and newer buckets is tested with a likelihood-ratio (G) test; if the best split is
    significant at ``change_sigma`` standard deviations, the older part is dropped. This is why
    it can be both precise and fast: a fixed 2 s window at 500 packets/s holds 1000 outcomes
    (±1.3 points of noise at 20 % loss) and still takes 2 s to show a step fully, whereas here
    a stationary link is measured over 5 s (2500 outcomes, ±0.2 points at 1 %) and a step
    from 0 to 10 % is cut to within a bucket or two. The G test's variance is inflated by
    ``2 * burst - 1`` (the variance factor of a loss process with geometric runs of mean
    ``burst``), so bursty (Gilbert-Elliott) loss is not mistaken for a change. At 1 % loss a
    spurious cut of the newest 100 ms needs 8 losses out of 50 (p ≈ 1e-6).
    """

    __slots__ = (
        "_bucket_s",
        "_buckets",
        "_change_g",
        "_count",
        "_last_pn",
        "_lost_total",
        "_outcomes_total",
        "_previous_lost",
        "ignored",
    )

    def __init__(
        self, *, window_s: float = 5.0, bucket_s: float = 0.1, change_sigma: float = 5.0
    ) -> None:
        if not 0 < bucket_s <= window_s or change_sigma <= 0:
            raise ValueError("need 0 < bucket_s <= window_s and change_sigma > 0")
        self._bucket_s = bucket_s
        self._count = max(1, math.ceil(window_s / bucket_s))
        self._change_g = change_sigma**2  # G is chi-square(1) under "no change": z^2
        self._buckets: deque[_LossBucket] = deque()  # oldest first; the last one is open
        self._last_pn = -1
        self._previous_lost = False
        self._outcomes_total = 0
        self._lost_total = 0
        self.ignored = 0
        """Outcomes refused because their packet number was not above the last one."""

    def on_outcome(self, pn: int, delivered: bool, now: float) -> None:
        """The fate of packet ``pn`` (acknowledged, or declared lost), in packet-number order.

        Only the first outcome of a packet number counts: a late acknowledgement of a packet
        already declared lost (a spurious loss) is ignored, and counted in ``ignored``.
        """
        self.on_outcomes(pn, 1, delivered, now)

    def on_outcomes(self, last_pn: int, count: int, delivered: bool, now: float) -> None:
        """``count`` packets with the same fate, the last of them ``last_pn``, all above every
        packet number seen before (a run of acknowledged packets costs one call)."""
        if last_pn - count + 1 <= self._last_pn:
            self.ignored += count
            return
        self._last_pn = last_pn
        index = math.floor(now / self._bucket_s)
        buckets = self._buckets
        if not buckets or index > buckets[-1].index:
            while buckets and buckets[0].index <= index - self._count:
                buckets.popleft()
            if buckets:
                self._on_bucket_closed()
            buckets.append(_LossBucket(index))
        bucket = buckets[-1]
        bucket.total += count
        self._outcomes_total += count
        if not delivered:
            bucket.lost += count
            self._lost_total += count
            if not self._previous_lost:
                bucket.runs += 1
        self._previous_lost = not delivered

    def on_spurious(self) -> None:
        """A packet already counted lost was delivered after all (it was reordered, not
        lost): count it delivered. The loss is taken back from the newest bucket holding one,
        which is where it was counted unless the acknowledgement came a bucket later."""
        for bucket in reversed(self._buckets):
            if bucket.lost:
                bucket.lost -= 1
                bucket.runs = min(bucket.runs, bucket.lost)
                self._lost_total -= 1
                return

    @property
    def loss_pct(self) -> float:
        """Loss over the recent window, in percent (0.0 before any outcome)."""
        total = sum(b.total for b in self._buckets)
        return 100.0 * sum(b.lost for b in self._buckets) / total if total else 0.0

    @property
    def loss_total_pct(self) -> float:
        """Loss over every outcome seen, in percent."""
        if not self._outcomes_total:
            return 0.0
        return 100.0 * self._lost_total / self._outcomes_total

    @property
    def burst_loss(self) -> float:
        """Mean length of runs of consecutive losses in the recent window (0.0 without loss).
        A run that began before the window counts by its part inside it."""
        lost = sum(b.lost for b in self._buckets)
        return lost / max(1, sum(b.runs for b in self._buckets)) if lost else 0.0

    def _on_bucket_closed(self) -> None:
        closed = list(self._buckets)  # the open bucket is about to be appended
        n_all = sum(b.total for b in closed)
        l_all = sum(b.lost for b in closed)
        if not 0 < l_all < n_all:
            return  # no loss (or nothing but loss): there is no rate difference to find
        inflation = 2 * self.burst_loss - 1
        best_g, best_split = 0.0, 0
        n_new = l_new = 0
        for split in range(len(closed) - 1, 0, -1):  # newer part = closed[split:]
            n_new += closed[split].total
            l_new += closed[split].lost
            n_old, l_old = n_all - n_new, l_all - l_new
            if min(n_new, n_old) < 30:  # too few outcomes for the test on one side
                continue
            g = _g_statistic(l_old, n_old, l_new, n_new) / inflation
            if g > best_g:
                best_g, best_split = g, split
        if best_g > self._change_g:
            for _ in range(best_split):
                self._buckets.popleft()


def _g_statistic(l_a: int, n_a: int, l_b: int, n_b: int) -> float:
    """Likelihood-ratio statistic for "same loss rate" between two samples (a G test, 1 degree
    of freedom). Unlike the normal approximation it stays honest with a handful of losses."""
    p = (l_a + l_b) / (n_a + n_b)

    def part(lost: int, n: int) -> float:
        g = 0.0
        if lost:
            g += lost * math.log(lost / (n * p))
        if n - lost:
            g += (n - lost) * math.log((n - lost) / (n * (1 - p)))
        return g

    return 2.0 * (part(l_a, n_a) + part(l_b, n_b))


class DeliveryRate:
    """Bottleneck bandwidth from receive-side delivery samples, after BBR's delivery-rate
    estimation (draft-cheng-iccrg-delivery-rate-estimation; Linux ``tcp_rate.c``): a rate
    sample is the bytes delivered over an interval divided by the *longer* of its send and
    receive spans, i.e. ``min(send_rate, receive_rate)``, so neither a send burst nor a
    compressed arrival inflates it.

    Each sample covers the packets received in the last ``span_s`` (at most ``max_packets``).
    It *measures the link* only if the network held the packets back: the receive span exceeds
    by ``dispersion`` plus four jitters the time the sender took to offer them. That catches a
    queue that is growing (the packets spread out). A full drop-tail queue admits one packet
    per service time, so its survivors arrive as spaced as they were sent; there, packets lost
    in between (packet-number gaps) count as offered too, but only while a queue stands
    (one-way delay at least ``max(5 ms, 4 jitters)`` above its 10 s minimum), so random loss
    on an idle link is not taken for a full queue. And a queue that stands under every sample of
    the interval (the same test) means the bottleneck was busy throughout, whatever the spacing:
    that is the steady state of an ack-clocked sender, which offers just what the link
    carries. Every other sample, and any interval holding
    a packet marked ``app_limited`` (the sender's queue was empty when it left, BBR's
    definition), is a lower bound.

    The estimate is the windowed max of the measurements over ``window_s`` (BBR's max filter)
    whenever measurements fill at least a quarter of that window, and otherwise holds, rising to
    any sample above it (a lower bound above it is news too, as in BBR). So neither a sender
    that sends less than the link carries, nor the odd sample that jitter or random loss made
    look held back, can lower it (or set the first value); a link measured slower for a
    quarter of ``window_s`` does. (A quarter, not more: a NewReno sender fills a 20 Mbit/s,
    40 ms link only near the top of each sawtooth, about a third of the time.)

    Limitation: bandwidth is only measurable once the sender has offered more than the link
    carries for a quarter of ``window_s`` (0.5 s): until then ``bandwidth_bps`` is None, and
    afterwards it holds the last measured value while the sender stays below it.
    """

    __slots__ = (
        "_app_limited_in_ring",
        "_bytes",
        "_dispersion",
        "_jitter",
        "_max_packets",
        "_measurements",
        "_owd_min",
        "_packets",
        "_ring",
        "_span_s",
        "_unqueued_in_ring",
        "bandwidth_bps",
    )

    _MIN_QUEUE_S = 0.005
    _BUCKETS = 20

    def __init__(
        self,
        *,
        window_s: float = 2.0,
        span_s: float = 0.1,
        dispersion: float = 0.1,
        max_packets: int = 4096,
    ) -> None:
        if not 0 < span_s < window_s or dispersion < 0 or max_packets < 2:
            raise ValueError("need 0 < span_s < window_s, dispersion >= 0, max_packets >= 2")
        self._measurements = _WindowedExtremum(window_s, window_s / self._BUCKETS, maximum=True)
        self._span_s = span_s
        self._dispersion = dispersion
        self._max_packets = max_packets
        # (pn, send_s, recv_s, bytes and packets delivered up to and including this packet,
        # app_limited, queued)
        self._ring: deque[tuple[int, float, float, int, int, bool, bool]] = deque()
        self._app_limited_in_ring = 0
        self._unqueued_in_ring = 0
        self._bytes = 0
        self._packets = 0
        self._jitter = InterarrivalJitter()
        self._owd_min = _WindowedExtremum(10.0, 1.0, maximum=False)
        self.bandwidth_bps: float | None = None
        """The estimate in bits per second; None until measurements have filled half the
        window."""

    def on_packet(
        self, pn: int, send_s: float, recv_s: float, size: int, app_limited: bool = False
    ) -> None:
        """One delivered packet, in arrival order: its packet number (every packet sent on the
        path has one, so a gap is a loss), send time (sender's clock), receive time
        (receiver's clock), size in bytes, and whether the sender was app-limited when it sent
        it (nothing else was waiting to go)."""
        self.on_sample(pn, send_s, recv_s, self._packets + 1, self._bytes + size, app_limited)

    def on_sample(
        self,
        pn: int,
        send_s: float,
        recv_s: float,
        packets: int,
        size: int,
        app_limited: bool = False,
    ) -> None:
        """One sampled packet, in arrival order, when the receiver reports only some of them:
        ``packets`` and ``size`` are the receiver's running totals of packets and bytes received
        up to and including this one (ARRIVALS records, PROTOCOL.md §4.8), so the packets in
        between count as delivered without a sample each."""
        self._jitter.on_packet(send_s, recv_s)
        self._owd_min.insert(recv_s, recv_s - send_s)
        owd_min = self._owd_min.value
        assert owd_min is not None
        noise_s = 4 * self._jitter.jitter_s
        # Queued: one-way delay well above its minimum (more than delay noise explains).
        queued = recv_s - send_s - owd_min > max(self._MIN_QUEUE_S, noise_s)
        self._bytes = size
        self._packets = packets
        ring = self._ring
        ring.append((pn, send_s, recv_s, size, packets, app_limited, queued))
        self._app_limited_in_ring += app_limited
        self._unqueued_in_ring += not queued
        # The reference is the newest packet that still spans span_s.
        while len(ring) > 2 and (
            recv_s - ring[1][2] >= self._span_s or len(ring) > self._max_packets
        ):
            old = ring.popleft()
            self._app_limited_in_ring -= old[5]
            self._unqueued_in_ring -= not old[6]
        ref_pn, ref_send, ref_recv, ref_bytes, ref_packets, ref_limited, _ = ring[0]
        recv_span = recv_s - ref_recv
        if recv_span < self._span_s and len(ring) < self._max_packets:
            return
        send_span = max(send_s - ref_send, 0.0)
        rate_bps = 8.0 * (self._bytes - ref_bytes) / max(send_span, recv_span, 1e-6)

        offered_span = send_span
        sent, received = pn - ref_pn, packets - ref_packets
        if 0 <= received < sent and queued:
            offered_span = send_span * received / sent
        # A queue that stood under (nearly) every sample of the interval kept the bottleneck
        # busy all along (an ack-clocked sender's steady state: it offers what the link
        # carries). Nearly: one sample in ten may fall below; delay noise alone puts a sample
        # above the test one time in six at most, so nine in ten never happens by chance.
        busy = self._unqueued_in_ring * 10 <= len(ring)
        held_back = busy or recv_span > offered_span * (1 + self._dispersion) + noise_s
        measurements = self._measurements
        if held_back and self._app_limited_in_ring - ref_limited == 0:
            measurements.insert(recv_s, rate_bps)
        else:
            measurements.expire(recv_s)
        if 4 * measurements.filled >= self._BUCKETS:  # measured consistently
            self.bandwidth_bps = measurements.value
        if self.bandwidth_bps is not None:
            self.bandwidth_bps = max(self.bandwidth_bps, rate_bps)
