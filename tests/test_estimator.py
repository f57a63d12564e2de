"""The link-quality estimators, fed by small seeded link generators (no clock, no sockets).

Each generator is a deterministic model of one impairment: constant delay plus normal jitter,
Bernoulli and Gilbert-Elliott loss, a FIFO bottleneck with a drop-tail queue, and a link that
stalls. Tolerances are stated against what the sample size allows.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterator

import pytest

from transport.delaytrend import SpikeDetector, SpikePattern, TrendlineEstimator
from transport.estimator import DeliveryRate, InterarrivalJitter, LossTracker
from transport.quality import QualityClassifier, QualityConfig
from transport.rtt import RttEstimator

# --- generators -------------------------------------------------------------------------------


def jittered_link(
    rng: random.Random,
    seconds: float,
    pps: float,
    base_s: float,
    sd_s: float,
    *,
    fifo: bool = False,
) -> list[tuple[float, float]]:
    """(send_s, recv_s) in arrival order: constant delay plus i.i.d. normal jitter; with
    ``fifo`` no packet overtakes another (it waits behind a late one, as in a queue)."""
    packets, last = [], 0.0
    for i in range(int(seconds * pps)):
        recv = i / pps + base_s + rng.gauss(0, sd_s)
        last = max(last, recv) if fifo else recv
        packets.append((i / pps, last))
    return sorted(packets, key=lambda p: p[1])


def bernoulli(rng: random.Random, loss: float) -> Iterator[bool]:
    """Delivered (True) or lost, independently."""
    while True:
        yield rng.random() >= loss


def gilbert_elliott(rng: random.Random, loss: float, mean_burst: float) -> Iterator[bool]:
    """Two-state Gilbert model: the bad state loses everything and lasts ``mean_burst``
    packets on average; the good state loses nothing. Stationary loss rate ``loss``."""
    leave_bad = 1 / mean_burst
    enter_bad = loss * leave_bad / (1 - loss)
    bad = False
    while True:
        bad = rng.random() >= leave_bad if bad else rng.random() < enter_bad
        yield not bad


Phase = tuple[float, float, float]  # (duration_s, send_bps, bottleneck_bps)


def bottleneck(
    rng: random.Random,
    phases: list[Phase],
    *,
    size: int = 1200,
    prop_s: float = 0.020,
    jitter_s: float = 0.0005,
    queue_s: float = 0.1,
    loss: float = 0.0,
) -> list[tuple[int, float, float, int]]:
    """(pn, send_s, recv_s, size) of the delivered packets of a paced sender through a FIFO
    bottleneck with a drop-tail queue of ``queue_s``, then propagation delay and a little
    jitter (order kept), and optional random loss."""
    t = free = last = 0.0
    pn = 0
    out: list[tuple[int, float, float, int]] = []
    for duration_s, send_bps, capacity_bps in phases:
        end = t + duration_s
        while t < end:
            start = max(t, free)
            if start - t <= queue_s and rng.random() >= loss:
                free = start + size * 8 / capacity_bps
                last = max(last, free + prop_s + abs(rng.gauss(0, jitter_s)))
                out.append((pn, t, last, size))
            t += size * 8 / send_bps
            pn += 1
    return out


def stalled_link(
    rng: random.Random,
    seconds: float,
    stalls: list[float],
    *,
    pps: float = 200,
    stall_s: float = 0.040,
    base_s: float = 0.020,
    sd_s: float = 0.001,
) -> list[tuple[float, float]]:
    """(send_s, recv_s) of a FIFO link that holds every packet during each stall
    ``[start, start + stall_s)`` and releases them at its end (as a Wi-Fi scan does)."""
    out: list[tuple[float, float]] = []
    last = 0.0
    starts = sorted(stalls)
    k = 0
    for i in range(int(seconds * pps)):
        send = i / pps
        while k < len(starts) and starts[k] + stall_s <= send:
            k += 1
        held = starts[k] + stall_s - send if k < len(starts) and starts[k] <= send else 0.0
        last = max(last, send + base_s + abs(rng.gauss(0, sd_s)) + held)
        out.append((send, last))
    return out


# --- InterarrivalJitter -----------------------------------------------------------------------


@pytest.mark.parametrize("sd_s", [0.001, 0.005])
def test_jitter_converges_to_the_rfc3550_expectation(sd_s: float) -> None:
    jitter = InterarrivalJitter()
    values = []
    for send, recv in jittered_link(random.Random(1), 50, 100, 0.030, sd_s):
        jitter.on_packet(send, recv)
        values.append(jitter.jitter_s)
    expected = 2 * sd_s / math.sqrt(math.pi)  # E|D| for D the difference of two N(0, sd^2)
    assert statistics.mean(values[500:]) == pytest.approx(expected, rel=0.05)


def test_jitter_follows_the_rfc3550_recurrence_exactly() -> None:
    jitter = InterarrivalJitter()
    jitter.on_packet(0.0, 0.010)
    assert jitter.jitter_s == 0.0  # one transit, no difference yet
    jitter.on_packet(0.020, 0.046)  # transit 26 ms: D = 16 ms
    assert jitter.jitter_s == pytest.approx(0.001)  # J = 0 + (16 ms - 0) / 16
    jitter.on_packet(0.040, 0.066)  # D = 0
    assert jitter.jitter_s == pytest.approx(0.001 - 0.001 / 16)


def test_jitter_ignores_clock_offset_and_is_zero_on_a_constant_delay() -> None:
    packets = jittered_link(random.Random(2), 5, 100, 0.030, 0.002)
    a, b, flat = InterarrivalJitter(), InterarrivalJitter(), InterarrivalJitter()
    for send, recv in packets:
        a.on_packet(send, recv)
        b.on_packet(send + 1234.5, recv)  # the sender's clock is elsewhere
        flat.on_packet(send, send + 0.030)
    assert a.jitter_s == pytest.approx(b.jitter_s, abs=1e-9)
    assert a.jitter_s > 0.001
    assert flat.jitter_s == pytest.approx(0.0, abs=1e-12)


# --- LossTracker ------------------------------------------------------------------------------


def feed_loss(
    tracker: LossTracker, outcomes: Iterator[bool], pps: float, start_s: float, seconds: float
) -> None:
    first = round(start_s * pps)
    for pn in range(first, first + round(seconds * pps)):
        tracker.on_outcome(pn, next(outcomes), pn / pps)


@pytest.mark.parametrize(
    ("loss", "pps"),
    # The sample limits the precision: after 5 s the binomial noise is sqrt(p(1-p)/n), 0.2
    # points at 1 % and 500 packets/s, 0.25 points at 20 % only from 5000 packets/s.
    [(0.01, 500), (0.05, 2000), (0.20, 5000)],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_settles_within_a_point_after_5_s(loss: float, pps: float, seed: int) -> None:
    tracker = LossTracker()
    feed_loss(tracker, bernoulli(random.Random(seed), loss), pps, 0, 5)
    assert tracker.loss_pct == pytest.approx(100 * loss, abs=1.0)
    assert tracker.loss_total_pct == pytest.approx(100 * loss, abs=1.0)
    assert tracker.burst_loss == pytest.approx(1 / (1 - loss), rel=0.15)  # geometric runs


def test_loss_window_reacts_to_steps_within_half_a_second() -> None:
    tracker = LossTracker()
    rng = random.Random(4)
    feed_loss(tracker, bernoulli(rng, 0.01), 500, 0, 10)
    feed_loss(tracker, bernoulli(rng, 0.20), 500, 10, 0.5)
    assert tracker.loss_pct > 10  # a fixed 5 s window would read 2.9 %, a 2 s one 5.8 %
    feed_loss(tracker, bernoulli(rng, 0.20), 500, 10.5, 1.5)
    assert tracker.loss_pct == pytest.approx(20, abs=5)
    feed_loss(tracker, bernoulli(rng, 0.0), 500, 12, 0.5)
    assert tracker.loss_pct < 5
    assert tracker.loss_total_pct == pytest.approx(100 * (0.1 + 0.4 + 0) / 12.5, abs=1)


def test_loss_window_is_stable_on_a_stationary_link() -> None:
    # A stationary link must not look like a string of steps: the window stays full and the
    # reading stays near the truth for a minute.
    tracker = LossTracker()
    rng = random.Random(5)
    readings = []
    for second in range(60):
        feed_loss(tracker, bernoulli(rng, 0.01), 500, second, 1)
        if second >= 5:
            readings.append(tracker.loss_pct)
    assert max(readings) < 1.8 and min(readings) > 0.4


@pytest.mark.parametrize("seed", [1, 2])
def test_burst_length_of_gilbert_elliott_loss(seed: int) -> None:
    tracker = LossTracker()
    feed_loss(tracker, gilbert_elliott(random.Random(seed), 0.05, 4.0), 5000, 0, 5)
    assert tracker.burst_loss == pytest.approx(4.0, rel=0.2)
    assert tracker.loss_pct == pytest.approx(5, abs=1.5)  # bursty loss is noisier
    assert LossTracker().burst_loss == 0.0


def test_loss_takes_the_first_outcome_of_a_packet_only() -> None:
    tracker = LossTracker()
    tracker.on_outcome(1, False, 0.0)
    tracker.on_outcome(1, True, 0.1)  # a late ack of a packet declared lost
    tracker.on_outcome(0, True, 0.1)  # out of order
    tracker.on_outcome(2, True, 0.1)
    assert tracker.ignored == 2
    assert tracker.loss_total_pct == pytest.approx(50.0)


# --- TrendlineEstimator -----------------------------------------------------------------------


def trend_states(
    packets: list[tuple[int, float, float, int]], estimator: TrendlineEstimator
) -> list[tuple[float, str, float]]:
    """(send_s, state, owd_ms) after each packet."""
    out: list[tuple[float, str, float]] = []
    for _, send, recv, size in packets:
        estimator.on_packet(send, recv, size)
        out.append((send, estimator.state, estimator.owd_ms))
    return out


def test_trendline_rising_while_a_queue_builds_then_falling_while_it_drains() -> None:
    # 1.5 Mbit/s into a 2 Mbit/s bottleneck, then 3 Mbit/s for 3 s (the queue grows 0.5 s per
    # second), then 1 Mbit/s (it drains at 1 s per second).
    phases = [(5.0, 1.5e6, 2e6), (3.0, 3e6, 2e6), (3.0, 1e6, 2e6)]
    packets = bottleneck(random.Random(6), phases, queue_s=10.0)
    states = trend_states(packets, TrendlineEstimator())
    before = [s for t, s, _ in states if t < 5]
    growing = [s for t, s, _ in states if 5.2 < t < 8]
    draining = [s for t, s, _ in states if 8.3 < t < 9.5]
    assert set(before) == {"steady"}
    assert growing.count("rising") / len(growing) > 0.95
    assert draining.count("falling") / len(draining) > 0.95
    first_rising = next(t for t, s, _ in states if s == "rising")
    assert 5.0 < first_rising < 5.2
    # owd_ms is the queueing delay: 0.5 s of queue per second of overload.
    owd_at_8 = next(owd for t, _, owd in states if t >= 8.0)
    assert owd_at_8 == pytest.approx(1500, rel=0.1)


@pytest.mark.parametrize(("sd_s", "fifo"), [(0.002, True), (0.005, True), (0.005, False)])
def test_trendline_steady_on_a_stationary_link_with_jitter(sd_s: float, fifo: bool) -> None:
    estimator = TrendlineEstimator()
    states = []
    for send, recv in jittered_link(random.Random(7), 60, 500, 0.020, sd_s, fifo=fifo):
        estimator.on_packet(send, recv, 1200)
        states.append(estimator.state)
        assert estimator.owd_ms < 8 * sd_s * 1000
    if fifo:
        assert set(states) == {"steady"}
    else:  # 5 ms of jitter on 2 ms spacing reorders most packets: GCC wobbles, rarely
        assert states.count("steady") / len(states) > 0.99


# --- SpikeDetector ----------------------------------------------------------------------------


def run_spikes(
    packets: list[tuple[float, float]], detector: SpikeDetector | None = None
) -> tuple[SpikeDetector, list[tuple[float, SpikePattern | None]]]:
    detector = detector or SpikeDetector()
    history = []
    for send, recv in packets:
        detector.on_sample(recv, recv - send)
        history.append((recv, detector.spikes))
    return detector, history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_periodic_stalls_are_found_with_their_period_and_height(seed: int) -> None:
    rng = random.Random(seed)
    stalls = [k + rng.uniform(-0.1, 0.1) for k in range(1, 30)]  # every 1 s, ±100 ms phase
    detector, history = run_spikes(stalled_link(rng, 30, stalls))
    assert detector.spikes is not None
    assert detector.spikes.period_s == pytest.approx(1.0, rel=0.1)
    assert detector.spikes.amplitude_s == pytest.approx(0.040, rel=0.2)
    first = next(t for t, s in history if s is not None)
    assert first < 10  # seven onsets (six intervals) make a pattern
    assert all(s is not None for t, s in history if t > first)  # no flicker once found


def test_spikes_found_from_the_trendline_queueing_delay() -> None:
    rng = random.Random(4)
    stalls = [0.5 + 0.8 * k + rng.uniform(-0.08, 0.08) for k in range(40)]
    estimator, detector = TrendlineEstimator(), SpikeDetector()
    for send, recv in stalled_link(rng, 30, stalls, pps=500, sd_s=0.002):
        estimator.on_packet(send, recv, 1200)
        detector.on_sample(recv, estimator.owd_s)
    assert detector.spikes is not None
    assert detector.spikes.period_s == pytest.approx(0.8, rel=0.1)


@pytest.mark.parametrize("seed", [1, 2])
def test_no_period_on_random_jitter_or_random_spikes(seed: int) -> None:
    rng = random.Random(seed)
    for fifo in (False, True):
        _, history = run_spikes(jittered_link(rng, 60, 200, 0.020, 0.003, fifo=fifo))
        assert all(s is None for _, s in history)
    t, poisson = 0.0, []  # same stalls, at random times (a Poisson process, 1 per second)
    while t < 300:
        t += rng.expovariate(1.0)
        poisson.append(t)
    _, history = run_spikes(stalled_link(rng, 300, poisson))
    assert all(s is None for _, s in history)


def test_no_period_from_a_single_spike() -> None:
    _, history = run_spikes(stalled_link(random.Random(3), 20, [5.0], stall_s=0.2))
    assert all(s is None for _, s in history)


def test_pattern_is_forgotten_when_the_stalls_stop() -> None:
    rng = random.Random(5)
    stalls = [k + rng.uniform(-0.05, 0.05) for k in range(1, 15)]  # last stall near 14 s
    _, history = run_spikes(stalled_link(rng, 25, stalls))
    assert any(s is not None for t, s in history if t < 14.5)
    assert all(s is None for t, s in history if t > 18.5)  # 3 periods after the last one


# --- DeliveryRate -----------------------------------------------------------------------------


def deliver(rate: DeliveryRate, packets: list[tuple[int, float, float, int]]) -> None:
    for pn, send, recv, size in packets:
        rate.on_packet(pn, send, recv, size)


@pytest.mark.parametrize("capacity_bps", [5e6, 20e6])
@pytest.mark.parametrize(
    ("jitter_s", "queue_s"),
    # A deep queue keeps growing (the packets spread out); a 100 ms drop-tail queue fills in
    # 0.2 s and then drops the excess (the survivors keep their spacing, the losses show).
    [(0.0005, 0.1), (0.002, 0.1), (0.002, 10.0)],
)
def test_bandwidth_of_a_saturated_bottleneck(
    capacity_bps: float, jitter_s: float, queue_s: float
) -> None:
    rate = DeliveryRate()
    phases = [(5.0, 1.5 * capacity_bps, capacity_bps)]
    deliver(rate, bottleneck(random.Random(8), phases, jitter_s=jitter_s, queue_s=queue_s))
    assert rate.bandwidth_bps == pytest.approx(capacity_bps, rel=0.2)


def test_bandwidth_unknown_until_the_sender_fills_the_link() -> None:
    rate = DeliveryRate()
    deliver(rate, bottleneck(random.Random(9), [(5.0, 2e6, 20e6)], jitter_s=0.002, loss=0.05))
    assert rate.bandwidth_bps is None


@pytest.mark.parametrize(
    ("jitter_s", "loss"), [(0.0005, 0.0), (0.002, 0.05), (0.002, 0.2), (0.005, 0.1)]
)
def test_app_limited_periods_do_not_lower_the_bandwidth(jitter_s: float, loss: float) -> None:
    rate = DeliveryRate()
    phases = [(3.0, 30e6, 20e6), (20.0, 2e6, 20e6)]  # saturate, then send a tenth of the link
    deliver(rate, bottleneck(random.Random(10), phases, jitter_s=jitter_s, loss=loss))
    assert rate.bandwidth_bps == pytest.approx(20e6, rel=0.2)


def test_bandwidth_follows_a_capacity_drop_unless_the_sender_says_app_limited() -> None:
    phases = [(3.0, 30e6, 20e6), (5.0, 8e6, 5e6)]  # the link drops to 5 Mbit/s under load
    packets = bottleneck(random.Random(11), phases)
    rate, flagged = DeliveryRate(), DeliveryRate()
    for pn, send, recv, size in packets:
        rate.on_packet(pn, send, recv, size)
        flagged.on_packet(pn, send, recv, size, app_limited=send >= 3.0)
    assert rate.bandwidth_bps == pytest.approx(5e6, rel=0.2)
    assert flagged.bandwidth_bps == pytest.approx(20e6, rel=0.2)


# --- QualityClassifier ------------------------------------------------------------------------

Metrics = dict[str, float | None]


def classify(
    classifier: QualityClassifier,
    metrics: Callable[[float], Metrics],
    start_s: float,
    seconds: float,
    rate_hz: float = 20,
) -> list[tuple[float, str]]:
    """Update ``classifier`` every 1/rate_hz s; return the changes as (time, class)."""
    changes: list[tuple[float, str]] = []
    for k in range(round(start_s * rate_hz), round((start_s + seconds) * rate_hz)):
        now = k / rate_hz
        m = metrics(now)
        new = classifier.update(
            now,
            rtt_s=m["rtt_s"],
            loss_pct=m.get("loss_pct") or 0.0,
            jitter_s=m.get("jitter_s") or 0.001,
            bandwidth_bps=m.get("bandwidth_bps"),
        )
        if new is not None:
            changes.append((now, new))
    return changes


class LossFeed:
    """Outcomes at ``pps`` into a LossTracker up to ``now``, from a loss rate per time."""

    def __init__(self, rng: random.Random, loss_at: Callable[[float], float], pps: float = 500):
        self.tracker = LossTracker()
        self.rng, self.loss_at, self.pps, self.pn = rng, loss_at, pps, 0

    def __call__(self, now: float) -> Metrics:
        while self.pn / self.pps <= now:
            t = self.pn / self.pps
            self.tracker.on_outcome(self.pn, self.rng.random() >= self.loss_at(t), t)
            self.pn += 1
        return {"rtt_s": 0.020, "loss_pct": self.tracker.loss_pct}


class RttFeed:
    """RTT samples every 20 ms into the session's RFC 6298 estimator; the classifier sees
    SRTT, as the session engine will pass it."""

    def __init__(self, sample: Callable[[float], float]):
        self.rtt, self.sample, self.t = RttEstimator(0.1, 0.2, 60.0), sample, 0.0

    def __call__(self, now: float) -> Metrics:
        while self.t <= now:
            self.rtt.update(self.sample(self.t), 0.0)
            self.t += 0.020
        return {"rtt_s": self.rtt.srtt_s}


def test_unknown_until_an_rtt_and_a_second_of_data() -> None:
    classifier = QualityClassifier()
    assert classifier.quality == "unknown" and classifier.since_s is None
    assert classify(classifier, lambda now: {"rtt_s": None}, 0, 3) == []
    assert classifier.quality == "unknown"
    changes = classify(classifier, lambda now: {"rtt_s": 0.010}, 3, 2)
    assert changes == [(3.0, "good")]  # the first update has been 3 s ago
    fresh = QualityClassifier()
    assert classify(fresh, lambda now: {"rtt_s": 0.010}, 0, 2) == [(1.0, "good")]
    assert fresh.quality == "good" and fresh.since_s == 1.0


def test_loss_step_flips_the_class_within_half_a_second_and_recovers_after_the_hold() -> None:
    # Loss 0 -> 10 % at 10 s, back to 0 at 20 s, measured by the LossTracker at 500 packets/s.
    feed = LossFeed(random.Random(12), lambda t: 0.10 if 10 <= t < 20 else 0.0)
    changes = classify(QualityClassifier(), feed, 0, 40)
    assert [q for _, q in changes] == ["good", "moderate", "good"]
    assert 10 < changes[1][0] <= 10.5
    # The window drops the lossy part ~0.4 s after the loss stops; improve_hold_s later (and
    # not before) the class is good again.
    assert 20.4 + 5.0 <= changes[2][0] < 26.0


def test_rtt_step_flips_the_class_within_half_a_second_and_recovers_after_the_hold() -> None:
    # RTT 20 -> 400 ms at 10 s and back at 20 s; SRTT follows in ~0.2 s (RFC 6298 gain 1/8).
    feed = RttFeed(lambda t: 0.400 if 10 <= t < 20 else 0.020)
    changes = classify(QualityClassifier(), feed, 0, 40)
    assert [q for _, q in changes] == ["good", "moderate", "minimal", "moderate", "good"]
    assert 10 < changes[1][0] <= 10.5 and changes[2][0] <= 10.5
    # SRTT is under 240 ms (minimal's threshold less the margin) from 20.08 s and under 40 ms
    # (good's) from 20.42 s: each better class comes improve_hold_s after that, not before.
    assert 25.08 <= changes[3][0] < 25.3
    assert 25.42 <= changes[4][0] < 25.7


def stationary_changes(
    metrics: Callable[[float], Metrics], config: QualityConfig | None = None
) -> int:
    """Class changes over 10 simulated minutes, updating at 10 Hz."""
    return len(classify(QualityClassifier(config), metrics, 0, 600, rate_hz=10))


@pytest.mark.parametrize("loss", [0.007, 0.009])
def test_a_noisy_stationary_loss_near_a_threshold_does_not_flap(loss: float) -> None:
    # The 5 s loss window at 0.7-0.9 % wanders across both 1 % (good's threshold) and 0.8 %
    # (less the margin) every minute or so.
    assert stationary_changes(LossFeed(random.Random(13), lambda t: loss)) <= 10


def test_margin_and_hold_alone_would_flap_there() -> None:
    # Why QualityConfig has flap damping: without it the same link changes class 25 times.
    undamped = QualityConfig(flap_backoff=1.0)
    assert stationary_changes(LossFeed(random.Random(13), lambda t: 0.007), undamped) > 10


def test_a_noisy_stationary_rtt_near_a_threshold_does_not_flap() -> None:
    rng = random.Random(14)
    assert stationary_changes(RttFeed(lambda t: max(0.001, rng.gauss(0.045, 0.015)))) <= 10


@pytest.mark.parametrize("bad_fraction", [0.05, 0.2, 0.5])
def test_raw_heavy_tailed_samples_do_not_flap(bad_fraction: float) -> None:
    # However noisy: unsmoothed RTTs, most 20 ms, some 400 ms, straight into the classifier.
    rng = random.Random(15)
    assert (
        stationary_changes(lambda t: {"rtt_s": 0.4 if rng.random() < bad_fraction else 0.02}) <= 10
    )


def test_a_link_that_fails_again_soon_after_recovering_is_believed_less() -> None:
    # Loss alternates 0 % / 20 % every 15 s: the first recovery takes improve_hold_s (5 s);
    # the failure 10 s later makes the next hold 20 s, longer than the clean spells.
    feed = LossFeed(random.Random(16), lambda t: 0.2 if int(t // 15) % 2 else 0.0)
    changes = classify(QualityClassifier(), feed, 0, 300)
    assert [q for _, q in changes] == ["good", "minimal", "good", "minimal"]
    assert 35.0 <= changes[2][0] < 36.0 and 45 < changes[3][0] < 45.5


def test_bandwidth_and_spikes_take_part_when_known() -> None:
    def run(bandwidth_bps: float | None = None, spikes: SpikePattern | None = None) -> list[str]:
        """Classes after 1 s of a clean link, then 0.1 s and 0.35 s of the given extras."""
        classifier = QualityClassifier()
        classifier.update(0.0, rtt_s=0.01, loss_pct=0.0, jitter_s=0.001)
        out = [str(classifier.update(1.0, rtt_s=0.01, loss_pct=0.0, jitter_s=0.001))]
        for now in (1.1, 1.35):
            new = classifier.update(
                now,
                rtt_s=0.01,
                loss_pct=0.0,
                jitter_s=0.001,
                bandwidth_bps=bandwidth_bps,
                spikes=spikes,
            )
            out.append(str(new))
        return out

    assert run() == ["good", "None", "None"]
    assert run(bandwidth_bps=50e6) == ["good", "None", "None"]
    assert run(bandwidth_bps=3e6) == ["good", "None", "moderate"]
    assert run(bandwidth_bps=0.5e6) == ["good", "None", "minimal"]
    assert run(spikes=SpikePattern(period_s=1.0, amplitude_s=0.040)) == ["good", "None", "moderate"]
    assert run(spikes=SpikePattern(period_s=1.0, amplitude_s=0.2)) == ["good", "None", "minimal"]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        QualityConfig(good_rtt_s=0.5, minimal_rtt_s=0.3)
    with pytest.raises(ValueError):
        QualityConfig(improve_margin=1.0)
    with pytest.raises(ValueError):
        QualityConfig(degrade_hold_s=-1)
    with pytest.raises(ValueError):
        QualityConfig(flap_backoff=0.5)
    with pytest.raises(ValueError):
        LossTracker(bucket_s=0)
    with pytest.raises(ValueError):
        DeliveryRate(span_s=5, window_s=2)
    with pytest.raises(ValueError):
        SpikeDetector(intervals=1)
