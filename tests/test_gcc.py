"""GoogCC: unit checks of its rules, and a closed loop through a simulated bottleneck.

The loop (:func:`simulate`) is a packet-level model, deterministic for a seed: an encoder
makes 30 frames a second of ``target_bps / 30`` bits, cut into 1200-byte packets, which a
:class:`~transport.pacer.Pacer` releases at ``pacing_bps`` into a FIFO bottleneck of
``capacity`` bit/s with a drop-tail limit of ``queue_packets``; packets then travel
``one_way_s``, and may be lost at random on the way. The receiver feeds its arrivals to a
:class:`~transport.delaytrend.TrendlineEstimator` and measures loss and the delivered rate over
the last 0.5 s; every ``feedback_s`` the sender gets that view, ``one_way_s`` old, as
:class:`~transport.congestion.LinkSignals`.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from transport.congestion import CongestionController, LinkSignals, NewReno
from transport.delaytrend import TrendlineEstimator
from transport.gcc import GccConfig, GoogCC
from transport.pacer import Pacer

MSS = 1200

# --- the closed loop ------------------------------------------------------------------------


@dataclass
class Trace:
    """What one run of :func:`simulate` saw."""

    times: list[float] = field(default_factory=list)
    """Feedback times, and at each the target and pacing rate after it."""
    targets: list[float] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)
    """Send time of each packet that got through the bottleneck, and its queueing delay
    there (waiting, not counting its own transmission)."""
    queue_delays: list[float] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    """When each frame was made, and how long until its last packet arrived (nan if a packet
    of it was lost)."""
    frame_delays: list[float] = field(default_factory=list)

    def target_at(self, t: float) -> float:
        for time, target in zip(reversed(self.times), reversed(self.targets), strict=True):
            if time <= t:
                return target
        return math.nan

    def targets_between(self, start: float, end: float) -> list[float]:
        return [x for t, x in zip(self.times, self.targets, strict=True) if start <= t < end]

    def queue_between(self, start: float, end: float) -> list[float]:
        return [q for t, q in zip(self.sends, self.queue_delays, strict=True) if start <= t < end]

    def frame_delays_between(self, start: float, end: float) -> list[float]:
        pairs = zip(self.frame_times, self.frame_delays, strict=True)
        return [d for t, d in pairs if start <= t < end and not math.isnan(d)]


def simulate(
    cc: GoogCC,
    seconds: float,
    capacity: Callable[[float], float],
    *,
    loss: float = 0.0,
    queue_packets: int = 50,
    one_way_s: float = 0.010,
    feedback_s: float = 0.050,
    fps: float = 30.0,
    keyframe_every: int = 0,
    keyframe_ratio: float = 5.0,
    seed: int = 1,
) -> Trace:
    rng = random.Random(seed)
    trace = Trace()
    pacer = Pacer()
    pacer.set_rate(cc.pacing_bps)
    trend = TrendlineEstimator(owd_window_s=10)
    waiting: deque[tuple[int, int]] = deque()  # (size, frame) at the pacer
    link: deque[float] = deque()  # departure times of the packets in the bottleneck
    link_free = 0.0
    arrivals: deque[tuple[float, float, int, int]] = deque()  # (send, recv, size, seq)
    window: deque[tuple[float, int, int]] = deque()  # receiver's last 0.5 s: (recv, size, seq)
    window_bytes = 0
    frame_left: list[int] = []  # packets of each frame not yet arrived
    frame_last: list[float] = []  # latest arrival of each frame so far
    seq = 0
    t = 0.0
    next_frame, next_feedback = 0.0, feedback_s
    while t < seconds:
        if t >= next_frame:
            frame = len(trace.frame_times)
            scale = 1.0
            if keyframe_every:  # the mean frame stays target / fps
                mean = (keyframe_every - 1 + keyframe_ratio) / keyframe_every
                scale = (keyframe_ratio if frame % keyframe_every == 0 else 1.0) / mean
            size = max(1, round(cc.target_bps / fps / 8 * scale))
            count = math.ceil(size / MSS)
            for i in range(count):
                waiting.append((min(MSS, size - i * MSS), frame))
            trace.frame_times.append(t)
            frame_left.append(count)
            frame_last.append(t)
            next_frame += 1 / fps
        if t >= next_feedback:
            now_r = t - one_way_s  # the receiver's view, as old as the feedback path is long
            while arrivals and arrivals[0][1] <= now_r:
                send, recv, size, pn = arrivals.popleft()
                trend.on_packet(send, recv, size)
                window.append((recv, size, pn))
                window_bytes += size
            while window and window[0][0] <= now_r - 0.5:
                window_bytes -= window.popleft()[1]
            lost = window[-1][2] - window[0][2] + 1 - len(window) if window else 0
            signals = LinkSignals(
                now=t,
                trend=trend.state,
                queue_delay_s=trend.owd_s,
                loss_fraction=lost / (lost + len(window)) if window else 0.0,
                rtt_s=2 * one_way_s + trend.owd_s,
                delivered_bps=window_bytes * 8 / 0.5 if now_r >= 0.5 else None,
            )
            cc.on_link(signals)
            pacer.set_rate(cc.pacing_bps)
            trace.times.append(t)
            trace.targets.append(cc.target_bps)
            trace.states.append(cc.state)
            next_feedback += feedback_s
        while waiting and pacer.next_send_s(t, waiting[0][0]) <= t:
            size, frame = waiting.popleft()
            pacer.on_sent(t, size)
            while link and link[0] <= t:
                link.popleft()
            if len(link) >= queue_packets:  # drop tail
                frame_left[frame] = -1
            else:
                start = max(t, link_free)
                link_free = start + size * 8 / capacity(start)
                link.append(link_free)
                if rng.random() < loss:
                    frame_left[frame] = -1
                else:
                    arrivals.append((t, link_free + one_way_s, size, seq))
                    trace.sends.append(t)
                    trace.queue_delays.append(start - t)
                    frame_last[frame] = max(frame_last[frame], link_free + one_way_s)
                    frame_left[frame] -= 1
            seq += 1
        next_t = min(next_frame, next_feedback)
        if waiting:  # the pacer's next release (after the loop above, always later than t)
            next_t = min(next_t, pacer.next_send_s(t, waiting[0][0]))
        t = next_t
    trace.frame_delays = [
        last - made if left == 0 else math.nan
        for made, last, left in zip(trace.frame_times, frame_last, frame_left, strict=True)
    ]
    return trace


def constant(bps: float) -> Callable[[float], float]:
    return lambda _t: bps


def step(before_bps: float, after_bps: float, at_s: float) -> Callable[[float], float]:
    return lambda t: before_bps if t < at_s else after_bps


def first_time(trace: Trace, after_s: float, condition: Callable[[float], bool]) -> float:
    """The first feedback time at or after ``after_s`` whose target meets ``condition``."""
    for t, target in zip(trace.times, trace.targets, strict=True):
        if t >= after_s and condition(target):
            return t
    return math.inf


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


# --- the closed loop: (a) to (f) ------------------------------------------------------------


def test_closed_loop_fills_a_5mbps_link_with_little_queue() -> None:
    """(a) After 10 s the mean target is >= 80 % of the link and the queue stays short."""
    trace = simulate(GoogCC(), 30, constant(5e6))
    utilisation = statistics.mean(trace.targets_between(10, 30)) / 5e6
    queue_p95 = p95(trace.queue_between(10, 30))
    assert utilisation >= 0.80, utilisation  # measured 0.93
    assert queue_p95 <= 0.050, queue_p95  # measured 9 ms
    assert set(trace.states[200:]) == {"increase", "hold", "decrease"}


def test_closed_loop_follows_a_capacity_drop_within_a_second() -> None:
    """(b) 10 -> 2 Mbit/s at 15 s: the target is below 2.2 Mbit/s within 1 s."""
    trace = simulate(GoogCC(), 20, step(10e6, 2e6, 15))
    assert trace.target_at(14.9) > 6e6  # it had found the fast link
    reacted = first_time(trace, 15, lambda x: x < 2.2e6) - 15
    assert reacted <= 1.0, reacted  # measured 0.6 s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_closed_loop_random_loss_of_5_percent_does_not_collapse_the_rate(seed: int) -> None:
    """(c) 5 % random loss on a 5 Mbit/s link: after warm-up the target stays >= 60 %."""
    trace = simulate(GoogCC(), 30, constant(5e6), loss=0.05, seed=seed)
    lowest = min(trace.targets_between(10, 30)) / 5e6
    assert lowest >= 0.60, lowest  # measured 0.82


def test_closed_loop_random_loss_of_20_percent_brings_the_rate_down() -> None:
    """(d) 20 % random loss: the loss-based estimate backs off (to the floor, eventually)."""
    cc = GoogCC()
    trace = simulate(cc, 20, constant(5e6), loss=0.20)
    assert trace.target_at(5) < 0.5 * max(trace.targets)
    assert trace.targets[-1] <= 0.25 * 5e6
    assert cc.loss_based_bps < cc.delay_based_bps


def test_closed_loop_fast_start_reaches_5mbps_within_5s() -> None:
    """(e) From 1 Mbit/s on a 10 Mbit/s link, above 5 Mbit/s within 5 s."""
    trace = simulate(GoogCC(GccConfig(start_bps=1e6)), 10, constant(10e6))
    reached = first_time(trace, 0, lambda x: x > 5e6)
    assert reached <= 5.0, reached  # measured 2.5 s
    assert min(trace.targets_between(5, 10)) >= 0.7 * 10e6


def test_closed_loop_follows_a_capacity_step_up_within_10s() -> None:
    """(f) 2 -> 10 Mbit/s at 15 s: the target is at 80 % of the new capacity within ~10 s."""
    trace = simulate(GoogCC(), 30, step(2e6, 10e6, 15))
    assert trace.target_at(14.9) < 2.2e6
    followed = first_time(trace, 15, lambda x: x >= 8e6) - 15
    assert followed <= 10.0, followed  # measured 8 s
    assert min(trace.targets_between(25, 30)) >= 0.7 * 10e6


def test_closed_loop_is_deterministic() -> None:
    one = simulate(GoogCC(), 5, constant(5e6), loss=0.05, seed=7)
    two = simulate(GoogCC(), 5, constant(5e6), loss=0.05, seed=7)
    assert one.targets == two.targets
    assert one.queue_delays == two.queue_delays


# --- the rules, one signal at a time --------------------------------------------------------


def signals(
    now: float,
    trend: str = "steady",
    *,
    delivered_bps: float | None = None,
    loss: float = 0.0,
    rtt_s: float | None = 0.05,
    min_rtt_s: float | None = None,
    queue_delay_s: float = 0.0,
) -> LinkSignals:
    assert trend in ("rising", "steady", "falling")
    return LinkSignals(
        now=now,
        trend=trend,  # type: ignore[arg-type]
        queue_delay_s=queue_delay_s,
        loss_fraction=loss,
        rtt_s=rtt_s,
        delivered_bps=delivered_bps,
        min_rtt_s=min_rtt_s,
    )


def feed(cc: GoogCC, start: float, end: float, trend: str = "steady", **kwargs: object) -> float:
    """Signals every 50 ms from ``start`` to ``end``, with the delivered rate following the
    target unless given; returns the next time."""
    t = start
    while t < end - 1e-9:
        delivered = kwargs.get("delivered_bps", cc.target_bps)
        loss = kwargs.get("loss", 0.0)
        assert isinstance(delivered, float | None) and isinstance(loss, float)
        cc.on_link(signals(t, trend, delivered_bps=delivered, loss=loss))
        t = round(t + 0.05, 9)
    return t


def overused(start_bps: float = 1e6) -> GoogCC:
    """A controller out of the fast start: one overuse at 2 s, delivered = target."""
    cc = GoogCC(GccConfig(start_bps=start_bps))
    cc.on_link(signals(0.0, "steady", delivered_bps=start_bps))
    cc.on_link(signals(2.0, "rising", delivered_bps=start_bps))
    assert not cc.in_startup and cc.state == "decrease"
    return cc


def test_starts_at_the_start_rate_with_pacing_and_a_window() -> None:
    cc = GoogCC(GccConfig(start_bps=2e6, pacing_factor=1.5))
    assert cc.target_bps == 2e6
    assert cc.pacing_bps == 3e6
    # 2 x 2 Mbit/s x (100 ms default RTT + 100 ms) / 8 = 100 kB
    assert cc.window_bytes == 100_000
    assert cc.state == "hold" and cc.in_startup and cc.link_capacity_bps is None


def test_fast_start_doubles_per_second_within_the_delivered_cap() -> None:
    cc = GoogCC()
    feed(cc, 0.0, 1.05)
    assert cc.target_bps == pytest.approx(2e6, rel=0.01)
    # The delivered rate caps growth at 1.5 x delivered + 10 kbit/s...
    cc = GoogCC()
    feed(cc, 0.0, 3.0, delivered_bps=1e6)
    assert cc.target_bps == pytest.approx(1.51e6)
    # ...but does not lower the rate.
    feed(cc, 3.0, 4.0, delivered_bps=0.5e6)
    assert cc.target_bps == pytest.approx(1.51e6)


def test_overuse_backs_off_to_beta_times_delivered_once_per_rtt() -> None:
    cc = GoogCC(GccConfig(start_bps=4e6))
    cc.on_link(signals(0.0, delivered_bps=4e6))
    cc.on_link(signals(1.0, "rising", delivered_bps=3e6, rtt_s=0.1))
    assert cc.delay_based_bps == pytest.approx(0.85 * 3e6)
    assert cc.state == "decrease" and not cc.in_startup
    assert cc.link_capacity_bps == pytest.approx(3e6)
    # Within an RTT of that change: no further decrease...
    cc.on_link(signals(1.05, "rising", delivered_bps=2.8e6, rtt_s=0.1))
    assert cc.delay_based_bps == pytest.approx(0.85 * 3e6)
    # ...unless the delivered rate fell below half the estimate.
    cc.on_link(signals(1.06, "rising", delivered_bps=1e6, rtt_s=0.1))
    assert cc.delay_based_bps == pytest.approx(0.85e6)


def test_overuse_never_raises_the_rate() -> None:
    cc = GoogCC(GccConfig(start_bps=1e6))
    cc.on_link(signals(1.0, "rising", delivered_bps=5e6))
    assert cc.target_bps == 1e6


def test_overuse_without_a_delivered_rate_halves_at_most_every_200ms() -> None:
    cc = GoogCC(GccConfig(start_bps=4e6))
    cc.on_link(signals(0.0, "rising"))
    cc.on_link(signals(0.1, "rising"))
    assert cc.target_bps == 2e6
    cc.on_link(signals(0.2, "rising"))
    assert cc.target_bps == 1e6


def test_a_deep_queue_with_little_getting_through_backs_off_before_the_detector_speaks() -> None:
    """A link that carries 40 kbit/s while we send 1 Mbit/s: the trendline needs 20 groups
    before it says "rising", a few seconds at such packet rates; the backstop does not wait."""
    cc = GoogCC(GccConfig(start_bps=1e6))
    cc.on_link(signals(0.0, "steady", delivered_bps=40e3, queue_delay_s=0.1))
    assert cc.target_bps == 1e6  # the queue is still short: no verdict yet
    cc.on_link(signals(0.5, "steady", delivered_bps=40e3, queue_delay_s=0.4))
    assert cc.target_bps == 100e3  # 0.85 x 40 kbit/s, clamped to min_bps
    assert cc.state == "decrease" and not cc.in_startup


def test_a_deep_queue_alone_does_not_back_off_while_the_link_delivers() -> None:
    cc = GoogCC(GccConfig(start_bps=1e6))
    cc.on_link(signals(0.0, "steady", delivered_bps=0.9e6, queue_delay_s=0.4))
    assert cc.target_bps >= 1e6


def test_underuse_holds() -> None:
    cc = overused()
    before = cc.target_bps
    feed(cc, 2.05, 4.0, "falling")
    assert cc.target_bps == before and cc.state == "hold"


def test_increase_is_multiplicative_without_a_capacity_estimate() -> None:
    cc = overused()
    cc.on_timeout(2.0)
    cc.on_timeout(2.0)  # two in a row: forgets the capacity estimate
    assert cc.link_capacity_bps is None and not cc.in_startup
    start = cc.target_bps
    feed(cc, 2.05, 3.05)  # the first steady signal only enters "increase"
    assert cc.state == "increase"
    assert cc.target_bps == pytest.approx(start * 1.08**0.95, rel=0.01)


def test_increase_is_additive_near_the_capacity_estimate() -> None:
    cc = overused()  # capacity estimate 1 Mbit/s, target 850 kbit/s
    start = cc.target_bps
    feed(cc, 2.05, 3.05)
    # 850 kbit/s at 30 fps: 28.3 kbit frames in 3 packets of 9.4 kbit, per 50 + 100 ms.
    per_s = (start / 30 / 3) / 0.150
    assert cc.target_bps == pytest.approx(start + 0.95 * per_s, rel=0.02)


def test_a_faster_link_restarts_the_fast_start() -> None:
    cc = overused()
    feed(cc, 2.05, 2.5)
    cc.on_link(signals(2.5, delivered_bps=1.5e6))  # far above the 1 Mbit/s capacity
    assert cc.in_startup and cc.link_capacity_bps is None


def test_moderate_loss_holds_and_heavy_loss_backs_off_once_per_interval() -> None:
    config = GccConfig(loss_smoothing_s=0.0)  # act on each report, as libwebrtc does
    cc = GoogCC(config)
    cc.on_link(signals(0.0, "rising", delivered_bps=1e6))  # out of the fast start
    cc.on_link(signals(0.5, "falling", delivered_bps=1e6, loss=0.05))
    held = cc.loss_based_bps
    cc.on_link(signals(0.6, "falling", delivered_bps=1e6, loss=0.05))
    assert cc.loss_based_bps == held
    target = cc.target_bps
    cc.on_link(signals(0.7, "falling", delivered_bps=1e6, loss=0.2, rtt_s=0.1))
    assert cc.target_bps == pytest.approx(target * 0.9)
    cc.on_link(signals(0.8, "falling", delivered_bps=1e6, loss=0.2, rtt_s=0.1))
    assert cc.target_bps == pytest.approx(target * 0.9)  # not before 300 ms + RTT
    cc.on_link(signals(1.1, "falling", delivered_bps=1e6, loss=0.2, rtt_s=0.1))
    assert cc.target_bps == pytest.approx(target * 0.81)


def test_low_loss_lets_the_loss_based_estimate_grow_8_percent_over_the_last_minimum() -> None:
    config = GccConfig(loss_smoothing_s=0.0)
    cc = GoogCC(config)
    cc.on_link(signals(0.0, "rising", delivered_bps=1e6))
    cc.on_link(signals(0.5, "rising", delivered_bps=1e6, loss=0.5))  # loss-based: 0.85 x 0.75
    low = cc.loss_based_bps
    cc.on_link(signals(0.6, "falling", delivered_bps=1e6, loss=0.0))
    assert cc.loss_based_bps == pytest.approx(low * 1.08 + 1e3)


def test_loss_is_smoothed_before_the_thresholds() -> None:
    cc = overused()
    before = cc.loss_based_bps
    cc.on_link(signals(2.05, "falling", delivered_bps=1e6, loss=0.3))  # one noisy report
    assert cc.loss_fraction < 0.10
    assert cc.loss_based_bps == before


def test_single_losses_and_acks_do_not_move_the_rate() -> None:
    cc = overused()
    before = (cc.target_bps, cc.window_bytes)
    cc.on_lost(1200, 2.0, 2.1)
    cc.on_acked(1200, 2.0, 2.1)
    assert (cc.target_bps, cc.window_bytes) == before


def test_a_second_timeout_in_a_row_halves_the_target_and_ends_the_fast_start() -> None:
    cc = GoogCC(GccConfig(start_bps=1e6, min_bps=600e3))
    cc.on_timeout(1.0)
    assert cc.target_bps == 1e6 and cc.in_startup  # one: most likely a lost tail packet
    cc.on_timeout(2.0)
    assert cc.target_bps == 600e3  # not below min_bps
    assert not cc.in_startup and cc.state == "hold" and cc.link_capacity_bps is None
    cc = GoogCC(GccConfig(start_bps=4e6))
    cc.on_timeout(1.0)
    cc.on_timeout(2.0)
    assert cc.target_bps == 2e6
    cc.on_timeout(3.0)
    assert cc.target_bps == 1e6


def test_a_timeout_that_finds_many_packets_lost_is_a_stall_and_halves_at_once() -> None:
    cc = GoogCC(GccConfig(start_bps=4e6))
    for i in range(3):
        cc.on_lost(1200, 0.9, 1.0 + i / 1000)
    cc.on_timeout(1.0)
    assert cc.target_bps == 4e6  # three packets: could be a burst's lost tail
    cc.on_acked(1200, 1.0, 1.1)
    for i in range(4):
        cc.on_lost(1200, 1.9, 2.0 + i / 1000)
    cc.on_timeout(2.0)
    assert cc.target_bps == 2e6 and not cc.in_startup


def test_an_acknowledgement_between_timeouts_means_no_persistent_congestion() -> None:
    cc = GoogCC(GccConfig(start_bps=4e6))
    for t in (1.0, 2.0, 3.0):
        cc.on_timeout(t)
        cc.on_acked(1200, t, t + 0.1)
    assert cc.target_bps == 4e6 and cc.in_startup


def test_target_is_clamped_to_the_configured_range() -> None:
    cc = GoogCC(GccConfig(start_bps=1e6, max_bps=1.2e6))
    feed(cc, 0.0, 3.0)
    assert cc.target_bps == 1.2e6
    cc = GoogCC(GccConfig(start_bps=200e3, min_bps=150e3))
    cc.on_link(signals(0.0, "rising", delivered_bps=10e3))
    assert cc.target_bps == 150e3


def test_window_follows_target_and_rtt() -> None:
    cc = GoogCC(GccConfig(start_bps=8e6, min_window_bytes=12_000))
    cc.on_link(signals(0.0, "falling", rtt_s=0.3))
    assert cc.window_bytes == int(2 * 8e6 * 0.4 / 8)
    for t in (1.0, 2.0, 3.0, 4.0):  # halves three times: 1 Mbit/s
        cc.on_timeout(t)
    assert cc.window_bytes == int(2 * 1e6 * 0.4 / 8)


def test_window_follows_the_path_rtt_not_a_standing_queue() -> None:
    """A queue that has grown the smoothed RTT to 5 s must not widen the window: the window
    is sized by the smallest RTT seen (the path without queues), so a link that has slowed
    to a trickle holds a few packets, not seconds of them."""
    cc = GoogCC(GccConfig(start_bps=8e6, min_window_bytes=12_000))
    cc.on_link(signals(0.0, "falling", rtt_s=5.0, min_rtt_s=0.05))
    assert cc.window_bytes == int(2 * 8e6 * 0.15 / 8)
    cc.on_timeout(1.0)
    cc.on_timeout(2.0)
    cc.on_timeout(3.0)
    cc.on_timeout(4.0)
    cc.on_timeout(5.0)
    cc.on_timeout(6.0)
    assert cc.window_bytes == 12_000  # 2 x 125 kbit/s x 0.15 s / 8 is below the floor


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_bps": 0},
        {"min_bps": -1},
        {"max_bps": math.inf},
        {"start_bps": 50e3},  # below min_bps
        {"min_bps": 2e6, "max_bps": 1e6},
        {"beta": 1.0},
        {"beta": 0.0},
        {"increase_per_s": 0.0},
        {"startup_gain_per_s": 0.5},
        {"low_loss_fraction": 0.2, "high_loss_fraction": 0.1},
        {"high_loss_fraction": 1.0},
        {"loss_decrease_interval_s": -1},
        {"loss_smoothing_s": math.nan},
        {"pacing_factor": 0.9},
        {"window_rtt_gain": 0},
        {"overload_queue_s": 0},
        {"stall_packets": 0},
        {"mss_bytes": 0},
        {"min_window_bytes": 100},
        {"initial_rtt_s": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GccConfig(**kwargs)  # type: ignore[arg-type]


# --- the Protocol -----------------------------------------------------------------------------


def drive(cc: CongestionController) -> tuple[int, float | None, float | None]:
    """Uses only the Protocol: mypy checks that both controllers satisfy it."""
    cc.on_link(signals(0.0, "steady", delivered_bps=1e6))
    cc.on_acked(1200, 0.0, 0.05)
    cc.on_lost(1200, 0.0, 0.05)
    return cc.window_bytes, cc.target_bps, cc.pacing_bps


def test_both_controllers_implement_the_protocol() -> None:
    reno = NewReno(1200, 10, 2)
    assert drive(reno) == (6_600, None, None)  # (12 000 + 1 200) / 2: on_link did nothing
    window, target, pacing = drive(GoogCC())
    assert target == 1e6 and pacing == 1.25e6 and window >= 16 * 1200


def test_newreno_ignores_link_signals() -> None:
    reno = NewReno(1200, 10, 2)
    reno.on_link(signals(0.0, "rising", delivered_bps=1e3, loss=0.5))
    assert reno.window_bytes == 12_000
    reno.on_lost(1200, 0.0, 0.1)
    assert reno.window_bytes == 6_000


def test_pacing_at_1_25_keeps_the_bottleneck_queue_shorter_than_at_2_5() -> None:
    """Why ``pacing_factor`` defaults to 1.25, not libwebrtc's 2.5 (one of the links of the
    comparison in GccConfig's docstring): with keyframes, the faster pacer moves frames'
    bursts into the bottleneck queue."""
    queues = {}
    for factor in (1.25, 2.5):
        trace = simulate(
            GoogCC(GccConfig(pacing_factor=factor)), 25, constant(5e6), keyframe_every=60
        )
        queues[factor] = p95(trace.queue_between(10, 25))
    assert queues[1.25] < 0.6 * queues[2.5], queues
