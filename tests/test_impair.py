"""The impairment model (bench.impair), in the deterministic tier: seeded, no sockets, no clock.

Each test checks a promise the module's docstrings make: what a datagram entering at ``now``
gets back from :meth:`Impairment.deliveries`, and what the counters say about it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.impair import (
    IPV4_UDP_OVERHEAD_BYTES,
    PARETO_SHAPE,
    GilbertElliott,
    Impairment,
    JitterShape,
    LinkConfig,
    LinkPair,
    Spikes,
)
from bench.traces import Trace, TraceKind

MTU_PAYLOAD = 1500 - IPV4_UDP_OVERHEAD_BYTES  # 1472: one Mahimahi opportunity, exactly
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def run(
    config: LinkConfig,
    times: Sequence[float],
    *,
    seed: int | str = 1,
    size: int = 1000,
) -> tuple[Impairment, list[list[float]]]:
    """Feed one ``size``-byte datagram at each of ``times``; the model and its answers."""
    impairment = Impairment(config, seed)
    return impairment, [impairment.deliveries(size, t) for t in times]


def spaced(count: int, gap_s: float, start_s: float = 0.0) -> list[float]:
    return [start_s + i * gap_s for i in range(count)]


def dropped(answers: Sequence[Sequence[float]]) -> list[int]:
    return [i for i, a in enumerate(answers) if not a]


def loss_runs(answers: Sequence[Sequence[float]]) -> list[int]:
    """Lengths of the runs of consecutive drops."""
    runs: list[int] = []
    current = 0
    for answer in answers:
        if answer:
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    if current:
        runs.append(current)
    return runs


def trace(
    kind: TraceKind, times_s: Sequence[float], values: Sequence[float], period_s: float
) -> Trace:
    return Trace(
        name=f"test-{kind}",
        format="synthetic",
        kind=kind,
        times_s=tuple(times_s),
        values=tuple(values),
        period_s=period_s,
    )


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- determinism ---------------------------------------------------------------------------------

NOISY = LinkConfig(
    delay_s=0.02,
    jitter_s=0.005,
    loss=0.05,
    burst=GilbertElliott.from_loss(0.02, 3),
    reorder=0.05,
    duplicate=0.05,
    rate_bps=2e6,
    queue_packets=30,
    spikes=Spikes(amplitude_s=0.03, duration_s=0.05, period_s=0.5, phase_jitter_s=0.05),
)


def test_same_seed_same_answers_different_seed_different() -> None:
    times = spaced(3000, 0.002)
    first, a = run(NOISY, times, seed=7)
    second, b = run(NOISY, times, seed=7)
    _, c = run(NOISY, times, seed=8)
    assert a == b
    assert first.counters == second.counters
    assert a != c
    assert dropped(a) != dropped(c)


def test_string_and_int_seeds_are_both_deterministic() -> None:
    times = spaced(500, 0.002)
    assert run(NOISY, times, seed="run-1")[1] == run(NOISY, times, seed="run-1")[1]
    assert run(NOISY, times, seed="run-1")[1] != run(NOISY, times, seed="run-2")[1]


def test_switching_other_impairments_on_keeps_the_random_losses() -> None:
    # "every datagram draws the same seven random numbers ... whatever the settings"
    times = spaced(5000, 0.001)
    plain = LinkConfig(loss=0.05)
    _, base = run(plain, times, seed=3)
    for other in (
        LinkConfig(loss=0.05, duplicate=0.5),
        LinkConfig(loss=0.05, reorder=0.3, jitter_s=0.01, jitter_shape="pareto"),
        LinkConfig(loss=0.05, duplicate=1.0, reorder=1.0, delay_s=0.1, jitter_keeps_order=True),
    ):
        _, answers = run(other, times, seed=3)
        assert dropped(answers) == dropped(base), other
    assert 150 < len(dropped(base)) < 350


def test_duplicate_draws_do_not_move_the_jitter_of_the_first_copy() -> None:
    times = spaced(2000, 0.001)
    _, without = run(LinkConfig(delay_s=0.05, jitter_s=0.01), times, seed=5)
    _, with_dups = run(LinkConfig(delay_s=0.05, jitter_s=0.01, duplicate=0.5), times, seed=5)
    assert [a[0] for a in with_dups] == [a[0] for a in without]
    assert sum(len(a) == 2 for a in with_dups) > 800


def test_link_pair_directions_draw_from_different_streams() -> None:
    config = LinkConfig(loss=0.2)
    forward, reverse = LinkPair(forward=config, reverse=config).impairments("s")
    times = spaced(500, 0.001)
    fwd = [forward.deliveries(100, t) for t in times]
    rev = [reverse.deliveries(100, t) for t in times]
    assert dropped(fwd) != dropped(rev)
    again, _ = LinkPair(forward=config, reverse=config).impairments("s")
    assert [again.deliveries(100, t) for t in times] == fwd


# -- delay and jitter ----------------------------------------------------------------------------

DELAY_S = 0.05
JITTER_S = 0.01
SAMPLES = 20_000


def delays(shape: JitterShape, *, seed: int = 11) -> list[float]:
    config = LinkConfig(delay_s=DELAY_S, jitter_s=JITTER_S, jitter_shape=shape)
    times = spaced(SAMPLES, 0.001)
    _, answers = run(config, times, seed=seed)
    assert all(len(a) == 1 for a in answers)
    return [a[0] - t for a, t in zip(answers, times, strict=True)]


@pytest.mark.parametrize(
    ("shape", "sd_tolerance"),
    [
        ("uniform", 0.05),
        ("normal", 0.05),
        # Pareto (tail index 2.5) has a finite variance but an infinite fourth moment: the
        # sample standard deviation converges slowly, so it gets a wider band.
        ("pareto", 0.15),
    ],
)
def test_jitter_is_zero_mean_with_the_configured_sd(
    shape: JitterShape, sd_tolerance: float
) -> None:
    sample = delays(shape)
    # delay_s is 5 sd, so clamping at the departure time is negligible (it never happens for
    # uniform, within 1.8 sd; Pareto is bounded below at -0.45 sd).
    assert statistics.fmean(sample) == pytest.approx(DELAY_S, rel=0.03)
    assert statistics.stdev(sample) == pytest.approx(JITTER_S, rel=sd_tolerance)


def test_uniform_jitter_is_bounded_by_sqrt3_sd() -> None:
    sample = delays("uniform")
    half_width = JITTER_S * math.sqrt(3)
    assert min(sample) >= DELAY_S - half_width
    assert max(sample) <= DELAY_S + half_width
    assert max(sample) > DELAY_S + 0.99 * half_width  # and fills it


def test_pareto_has_a_heavier_right_tail_than_normal() -> None:
    pareto, normal = delays("pareto"), delays("normal")
    above = {
        name: quantile(s, 0.999) - statistics.fmean(s)
        for name, s in (("pareto", pareto), ("normal", normal))
    }
    assert above["pareto"] > 2 * above["normal"]
    assert above["normal"] == pytest.approx(3.09 * JITTER_S, rel=0.1)
    # Shifted to zero mean, Pareto is bounded below at -sd * sqrt((a - 2) / a), -0.45 sd.
    lowest = -JITTER_S * math.sqrt((PARETO_SHAPE - 2) / PARETO_SHAPE)
    assert min(pareto) - DELAY_S == pytest.approx(lowest, abs=JITTER_S * 0.01)
    assert min(pareto) - DELAY_S >= lowest - 1e-12


def test_no_jitter_means_exactly_the_delay() -> None:
    times = spaced(100, 0.003, start_s=5.0)
    _, answers = run(LinkConfig(delay_s=0.025), times)
    assert answers == [[t + 0.025] for t in times]


def test_delivery_never_precedes_the_send_under_large_jitter() -> None:
    times = spaced(5000, 0.001)
    _, answers = run(LinkConfig(delay_s=0.001, jitter_s=0.05), times)
    assert all(a[0] >= t for a, t in zip(answers, times, strict=True))
    assert sum(a[0] == t for a, t in zip(answers, times, strict=True)) > 1000  # clamped


def inversions(deliveries: Sequence[float]) -> int:
    return sum(later < earlier for earlier, later in itertools.pairwise(deliveries))


def test_jitter_keeps_order_never_reorders() -> None:
    times = spaced(3000, 0.0005)
    config = LinkConfig(delay_s=0.03, jitter_s=0.02, jitter_keeps_order=True)
    _, answers = run(config, times)
    firsts = [a[0] for a in answers]
    assert inversions(firsts) == 0
    assert all(f >= t for f, t in zip(firsts, times, strict=True))
    free = [a[0] for a in run(LinkConfig(delay_s=0.03, jitter_s=0.02), times)[1]]
    assert inversions(free) > 500


def test_reorder_still_reorders_when_jitter_keeps_order() -> None:
    times = spaced(2000, 0.001)
    config = LinkConfig(delay_s=0.01, jitter_keeps_order=True, reorder=0.1, reorder_delay_s=0.005)
    impairment, answers = run(config, times)
    assert inversions([a[0] for a in answers]) > 50
    assert impairment.counters.reordered > 100


# -- loss ----------------------------------------------------------------------------------------


def test_random_loss_rate() -> None:
    impairment, answers = run(LinkConfig(loss=0.05), spaced(SAMPLES, 0.001), seed=2)
    lost = len(dropped(answers))
    assert lost / SAMPLES == pytest.approx(0.05, abs=0.01)
    assert impairment.counters.lost_random == lost
    assert impairment.counters.dropped == lost
    assert impairment.counters.lost_burst == 0


def test_gilbert_elliott_from_loss_parameters() -> None:
    chain = GilbertElliott.from_loss(0.03, 4)
    assert chain.p_bad_to_good == pytest.approx(0.25)
    assert chain.mean_loss == pytest.approx(0.03)
    assert GilbertElliott(p_good_to_bad=0.0, p_bad_to_good=0.0).mean_loss == 0.0
    half = GilbertElliott(p_good_to_bad=0.1, p_bad_to_good=0.1, loss_bad=0.5, loss_good=0.1)
    assert half.mean_loss == pytest.approx(0.3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gilbert_elliott_loss_comes_in_bursts(seed: int) -> None:
    count = 50_000
    config = LinkConfig(burst=GilbertElliott.from_loss(0.03, 4))
    impairment, answers = run(config, spaced(count, 0.001), seed=seed)
    lost = len(dropped(answers))
    assert lost / count == pytest.approx(0.03, abs=0.006)
    runs = loss_runs(answers)
    assert statistics.fmean(runs) == pytest.approx(4.0, rel=0.15)
    assert impairment.counters.lost_burst == lost
    assert impairment.counters.lost_random == 0
    # Random loss at 3% would give runs of about 1.03 on average.
    _, independent = run(LinkConfig(loss=0.03), spaced(count, 0.001), seed=seed)
    assert statistics.fmean(loss_runs(independent)) < 1.1


def test_burst_and_random_loss_are_counted_apart() -> None:
    times = spaced(SAMPLES, 0.001)
    # Lossy but not always in the bad state, so that the two losses' draws must be apart.
    chain = GilbertElliott(p_good_to_bad=0.05, p_bad_to_good=0.25, loss_bad=0.5)
    _, burst_only = run(LinkConfig(burst=chain), times, seed=9)
    _, random_only = run(LinkConfig(loss=0.05), times, seed=9)
    both, answers = run(LinkConfig(burst=chain, loss=0.05), times, seed=9)
    by_burst, by_random = set(dropped(burst_only)), set(dropped(random_only))
    assert set(dropped(answers)) == by_burst | by_random
    assert both.counters.lost_burst == len(by_burst)
    assert both.counters.lost_random == len(by_random - by_burst)
    assert both.counters.dropped == len(by_burst | by_random)
    # Independent: random loss hits burst-lost datagrams as often as any others.
    assert len(by_burst & by_random) / len(by_random) == pytest.approx(chain.mean_loss, abs=0.03)
    assert len(by_burst) / SAMPLES == pytest.approx(chain.mean_loss, abs=0.02)


def test_lossy_good_state_and_lossless_bad_state() -> None:
    chain = GilbertElliott(p_good_to_bad=0.0, p_bad_to_good=1.0, loss_good=0.1)
    impairment, answers = run(LinkConfig(burst=chain), spaced(SAMPLES, 0.001))
    assert len(dropped(answers)) / SAMPLES == pytest.approx(0.1, abs=0.01)
    assert impairment.counters.lost_burst == len(dropped(answers))


# -- the bottleneck queue ------------------------------------------------------------------------

RATE_BPS = 1e6
WIRE_BYTES = 1000
PAYLOAD = WIRE_BYTES - IPV4_UDP_OVERHEAD_BYTES
SERIALIZATION_S = WIRE_BYTES * 8 / RATE_BPS  # 8 ms


def test_overloaded_rate_limit_delivers_the_rate_and_drops_the_excess() -> None:
    queue = 20
    config = LinkConfig(rate_bps=RATE_BPS, queue_packets=queue)
    impairment = Impairment(config, 1)
    times = spaced(2000, SERIALIZATION_S / 2)  # twice the rate
    out: list[tuple[float, float]] = []
    for t in times:
        answer = impairment.deliveries(PAYLOAD, t)
        assert impairment.queue_depth(t) <= queue
        if answer:
            (at,) = answer
            out.append((t, at))
            # Waits behind at most queue - 1 others, then its own serialization.
            assert at - t <= queue * SERIALIZATION_S + 1e-9
    departures = [at for _, at in out]
    span = departures[-1] - departures[0]
    throughput_bps = (len(departures) - 1) * WIRE_BYTES * 8 / span
    assert throughput_bps == pytest.approx(RATE_BPS, rel=0.01)
    counters = impairment.counters
    assert counters.queue_peak == queue
    assert counters.dropped_queue == len(times) - len(out)
    assert counters.dropped_queue == pytest.approx(len(times) / 2, rel=0.05)
    assert counters.dropped == counters.dropped_queue
    # Once full, the queue delay sits at its bound.
    assert out[-1][1] - out[-1][0] == pytest.approx(queue * SERIALIZATION_S, abs=SERIALIZATION_S)


def test_underloaded_rate_limit_adds_only_serialization() -> None:
    config = LinkConfig(delay_s=0.05, rate_bps=RATE_BPS, queue_packets=5)
    times = spaced(500, 2 * SERIALIZATION_S)
    impairment, answers = run(config, times, size=PAYLOAD)
    for answer, t in zip(answers, times, strict=True):
        assert answer == [pytest.approx(t + 0.05 + SERIALIZATION_S, abs=1e-9)]
    assert impairment.counters.dropped == 0
    assert impairment.counters.queue_peak == 1


def test_unbounded_queue_turns_excess_into_delay() -> None:
    times = spaced(100, 0.0)  # a burst at once
    impairment, answers = run(LinkConfig(rate_bps=RATE_BPS), times, size=PAYLOAD)
    assert [a[0] for a in answers] == pytest.approx([(i + 1) * SERIALIZATION_S for i in range(100)])
    assert impairment.queue_depth(0.0) == 100
    assert impairment.queue_depth(50.5 * SERIALIZATION_S) == 50
    assert impairment.queue_depth(100.5 * SERIALIZATION_S) == 0
    assert impairment.counters.queue_peak == 100


def test_rate_counts_the_ip_and_udp_headers() -> None:
    _, answers = run(LinkConfig(rate_bps=8000.0), [0.0], size=72)  # 100 wire bytes = 0.1 s
    assert answers == [[pytest.approx(0.1)]]


# -- spikes --------------------------------------------------------------------------------------


def spike_extras(spikes: Spikes, times: Sequence[float], seed: int = 1) -> list[float]:
    delay = 0.01
    _, answers = run(LinkConfig(delay_s=delay, spikes=spikes), times, seed=seed)
    return [a[0] - t - delay for a, t in zip(answers, times, strict=True)]


def test_spike_extra_delay_drains_linearly() -> None:
    spikes = Spikes(amplitude_s=0.04, duration_s=0.1, period_s=1.0, offset_s=0.2)
    times = spaced(3000, 0.001)  # three periods
    for t, extra in zip(times, spike_extras(spikes, times), strict=True):
        into = (t - 0.2) % 1.0
        if t >= 0.2 and into < 0.1 - 1e-9:
            assert extra == pytest.approx(0.04 * (1 - into / 0.1), abs=1e-9), t
        elif t < 0.2 or into > 1e-9:
            assert extra == pytest.approx(0.0, abs=1e-12), t


def test_a_stall_releases_its_backlog_at_once() -> None:
    spikes = Spikes(amplitude_s=0.04, duration_s=0.04, period_s=0.5, offset_s=0.1)
    times = spaced(2000, 0.0005)  # two periods
    delay = 0.01
    _, answers = run(LinkConfig(delay_s=delay, spikes=spikes), times)
    for onset in (0.1, 0.6):
        during = [
            a[0] for a, t in zip(answers, times, strict=True) if onset + 1e-9 < t < onset + 0.04
        ]
        assert len(during) > 70
        assert during == pytest.approx([onset + 0.04 + delay] * len(during), abs=1e-9)


def test_spike_phase_jitter_is_bounded_and_seeded() -> None:
    amplitude, period, jitter = 0.02, 0.3, 0.05
    spikes = Spikes(
        amplitude_s=amplitude,
        duration_s=amplitude,
        period_s=period,
        phase_jitter_s=jitter,
        offset_s=0.1,
    )
    times = spaced(6000, 0.0005)  # ten periods

    def onsets(seed: int) -> dict[int, float]:
        found: dict[int, float] = {}
        for t, extra in zip(times, spike_extras(spikes, times, seed), strict=True):
            if extra > 1e-9:  # inside a stall that started at t + extra - amplitude
                slot = round((t - 0.1) / period)
                found.setdefault(slot, t + extra - amplitude)
        return found

    one = onsets(1)
    assert len(one) >= 9
    moved = [onset - (0.1 + slot * period) for slot, onset in one.items()]
    assert all(abs(m) <= jitter + 1e-9 for m in moved)
    assert max(abs(m) for m in moved) > jitter / 4
    # Each spike draws its own offset.
    assert max(moved) - min(moved) > jitter / 4
    assert onsets(1) == one
    assert onsets(2) != one


def test_spikes_apply_at_the_queue_departure() -> None:
    # "A datagram leaving the queue x seconds into a spike": a datagram that waited in the
    # queue into the spike gets the spike's delay.
    spikes = Spikes(amplitude_s=0.05, duration_s=0.05, period_s=10.0, offset_s=0.1)
    config = LinkConfig(rate_bps=8000.0, spikes=spikes)  # 100 wire bytes: 0.1 s
    _, answers = run(config, [0.0, 0.0], size=72)
    assert answers[0] == [pytest.approx(0.15)]  # leaves at 0.1, stall until 0.15
    assert answers[1] == [pytest.approx(0.2)]  # leaves at 0.2, after the stall


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"amplitude_s": 0.04, "duration_s": 0.02, "period_s": 1.0}, "at least the amplitude"),
        ({"amplitude_s": 0.01, "duration_s": 0.1, "period_s": 0.1}, "period"),
        (
            {"amplitude_s": 0.01, "duration_s": 0.1, "period_s": 0.25, "phase_jitter_s": 0.08},
            "period",
        ),
        ({"amplitude_s": -0.01, "duration_s": 0.1, "period_s": 1.0}, "negative"),
        ({"amplitude_s": 0.01, "duration_s": 0.1, "period_s": 1.0, "offset_s": -1}, "negative"),
    ],
)
def test_invalid_spikes_are_refused(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Spikes(**kwargs)


# -- traces --------------------------------------------------------------------------------------


def test_opportunities_send_at_the_listed_instants() -> None:
    opportunities = trace("opportunities", [0.010, 0.020, 0.035], [1500.0] * 3, 0.050)
    config = LinkConfig(trace=opportunities, queue_packets=100)
    _, answers = run(config, [0.0, 0.0, 0.0, 0.0, 0.0], size=MTU_PAYLOAD)
    # One full-size datagram per opportunity; the trace loops every 50 ms.
    assert [a[0] for a in answers] == pytest.approx([0.010, 0.020, 0.035, 0.060, 0.070])


def test_an_opportunity_carries_several_small_datagrams() -> None:
    opportunities = trace("opportunities", [0.010, 0.020], [1500.0, 1500.0], 0.030)
    config = LinkConfig(trace=opportunities, queue_packets=100)
    impairment = Impairment(config, 1)
    # 300 wire bytes each: five fill the first opportunity exactly.
    small = [impairment.deliveries(300 - IPV4_UDP_OVERHEAD_BYTES, 0.001)[0] for _ in range(6)]
    assert small == pytest.approx([0.010] * 5 + [0.020])


def test_a_datagram_over_1500_wire_bytes_takes_two_opportunities() -> None:
    opportunities = trace("opportunities", [0.010, 0.020, 0.030], [1500.0] * 3, 0.040)
    config = LinkConfig(trace=opportunities, queue_packets=100)
    _, answers = run(config, [0.0, 0.0], size=MTU_PAYLOAD + 1)
    # 1501 bytes: the first opportunity and one byte of the second; the next starts there.
    assert [a[0] for a in answers] == pytest.approx([0.020, 0.030])


def test_an_opportunity_finding_the_queue_empty_is_wasted() -> None:
    opportunities = trace("opportunities", [0.010, 0.020, 0.030], [1500.0] * 3, 0.040)
    config = LinkConfig(trace=opportunities, queue_packets=100)
    # Arrivals after 10 and 20 ms: those opportunities went by unused.
    _, answers = run(config, [0.021, 0.021], size=MTU_PAYLOAD)
    assert [a[0] for a in answers] == pytest.approx([0.030, 0.050])
    # A small datagram leaves room in its opportunity; once that instant has passed, the
    # room is gone too.
    _, answers = run(config, [0.0, 0.015], size=100)
    assert [a[0] for a in answers] == pytest.approx([0.010, 0.020])
    # ... but a datagram arriving at that very instant still fits.
    _, answers = run(config, [0.0, 0.010], size=100)
    assert [a[0] for a in answers] == pytest.approx([0.010, 0.010])


def test_an_outage_holds_datagrams_and_the_queue_limit_drops_beyond() -> None:
    # Opportunities at 1 ms and 50 ms of each 100 ms: a 49 ms outage.
    opportunities = trace("opportunities", [0.001, 0.050], [1500.0, 1500.0], 0.100)
    config = LinkConfig(trace=opportunities, queue_packets=5)
    times = spaced(10, 0.001, start_s=0.002)
    impairment, answers = run(config, times, size=MTU_PAYLOAD)
    assert [a[0] for a in answers if a] == pytest.approx([0.050, 0.101, 0.150, 0.201, 0.250])
    assert dropped(answers) == [5, 6, 7, 8, 9]
    assert impairment.counters.dropped_queue == 5
    assert impairment.queue_depth(0.011) == 5
    assert impairment.queue_depth(0.2) == 2


def test_rate_trace_serialization_follows_the_segment() -> None:
    rates = trace("rate", [0.0, 0.1], [8e6, 4e6], 0.2)  # 1000 wire bytes: 1 ms, then 2 ms
    _, answers = run(LinkConfig(trace=rates), [0.05, 0.15, 0.25, 0.35], size=PAYLOAD)
    assert [a[0] for a in answers] == pytest.approx([0.051, 0.152, 0.251, 0.352])
    # Straddling a boundary: half the bits at 8 Mbit/s, the other half at 4 Mbit/s.
    _, answers = run(LinkConfig(trace=rates), [0.0995], size=PAYLOAD)
    assert answers[0][0] == pytest.approx(0.1 + 0.001)


def test_rate_trace_zero_segment_holds_datagrams_until_it_ends() -> None:
    rates = trace("rate", [0.0, 0.1], [8e6, 0.0], 0.2)
    _, answers = run(LinkConfig(trace=rates), [0.15, 0.0995, 0.35], size=PAYLOAD)
    assert answers[0][0] == pytest.approx(0.201)  # waits for the outage to end
    _, answers = run(LinkConfig(trace=rates), [0.0995], size=PAYLOAD)
    assert answers[0][0] == pytest.approx(0.2005)  # half before, half after it
    _, answers = run(LinkConfig(trace=rates), [1.15], size=PAYLOAD)
    assert answers[0][0] == pytest.approx(1.201)  # looping


def test_rate_trace_zero_throughout_is_refused() -> None:
    with pytest.raises(ValueError, match="zero"):
        Impairment(LinkConfig(trace=trace("rate", [0.0, 1.0], [0.0, 0.0], 2.0)))


def test_opportunity_trace_carrying_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        empty = trace("opportunities", [0.001, 0.002], [0.0, 0.0], 0.01)
        Impairment(LinkConfig(trace=empty, queue_packets=10))


@pytest.mark.parametrize(
    ("times", "values", "period"),
    [((0.0, 0.01), (0.0, 1e6), 0.01), ((0.0, 0.0, 0.0), (0.0, 1e6, 0.0), 0.02)],
    ids=["last-time-is-the-period", "repeated-times"],
)
def test_rate_trace_without_time_at_a_rate_is_refused(
    times: tuple[float, ...], values: tuple[float, ...], period: float
) -> None:
    with pytest.raises(ValueError):
        Impairment(LinkConfig(trace=trace("rate", times, values, period)))


def test_delay_trace_adds_its_held_value() -> None:
    extra = trace("delay", [0.0, 0.5], [0.010, 0.030], 1.0)
    times = [0.2, 0.7, 1.2, 1.5, 2.99]
    _, answers = run(LinkConfig(delay_s=0.005, trace=extra), times)
    expected = [0.015, 0.035, 0.015, 0.035, 0.035]
    assert [a[0] - t for a, t in zip(answers, times, strict=True)] == pytest.approx(expected)


def test_delay_trace_needs_no_queue() -> None:
    extra = trace("delay", [0.0], [0.02], 1.0)
    impairment, answers = run(LinkConfig(trace=extra), [0.0] * 50)
    assert answers == [[pytest.approx(0.02)]] * 50
    assert impairment.counters.queue_peak == 0


# -- duplication, reordering, blackouts ----------------------------------------------------------


def test_duplicates() -> None:
    impairment, answers = run(LinkConfig(delay_s=0.01, duplicate=0.1), spaced(SAMPLES, 0.001))
    doubles = sum(len(a) == 2 for a in answers)
    assert doubles / SAMPLES == pytest.approx(0.1, abs=0.01)
    assert all(1 <= len(a) <= 2 for a in answers)
    counters = impairment.counters
    assert counters.duplicated == doubles
    assert counters.delivered == sum(len(a) for a in answers)
    # Without jitter, the copy comes out with the original.
    assert all(a[1] == a[0] for a in answers if len(a) == 2)


def test_a_duplicate_draws_its_own_jitter() -> None:
    times = spaced(SAMPLES, 0.001)
    config = LinkConfig(delay_s=0.05, jitter_s=0.01, duplicate=0.2)
    _, answers = run(config, times)
    pairs = [a for a in answers if len(a) == 2]
    assert all(first != copy for first, copy in pairs)
    gaps = [copy - first for first, copy in pairs]
    # The difference of two independent draws: zero mean, sd * sqrt(2).
    assert statistics.fmean(gaps) == pytest.approx(0.0, abs=0.001)
    assert statistics.stdev(gaps) == pytest.approx(0.01 * math.sqrt(2), rel=0.05)


def test_reorder_holds_a_fraction_back() -> None:
    times = spaced(SAMPLES, 0.001)
    config = LinkConfig(delay_s=0.02, reorder=0.1, reorder_delay_s=0.005)
    impairment, answers = run(config, times)
    extra = [a[0] - t for a, t in zip(answers, times, strict=True)]
    held = sum(e == pytest.approx(0.025) for e in extra)
    assert sum(e == pytest.approx(0.02) for e in extra) + held == SAMPLES
    assert held / SAMPLES == pytest.approx(0.1, abs=0.01)
    assert impairment.counters.reordered == held
    # Spaced 1 ms and held 5 ms: each held datagram is overtaken by the next few.
    assert inversions([a[0] for a in answers]) >= held * 0.9


def test_blackouts_drop_everything_inside_start_end() -> None:
    config = LinkConfig(delay_s=0.01).blackout(1.0, 2.0).blackout(2.5, 2.6)
    times = spaced(300, 0.01)
    impairment, answers = run(config, times)
    for t, answer in zip(times, answers, strict=True):
        inside = 1.0 <= t < 2.0 or 2.5 <= t < 2.6
        assert (not answer) == inside, t
    assert impairment.counters.lost_blackout == len(dropped(answers))
    # Boundaries: the start is inside, the end is not.
    _, edges = run(LinkConfig().blackout(1.0, 2.0), [0.999, 1.0, 1.999, 2.0])
    assert [bool(a) for a in edges] == [True, False, False, True]


# -- the property --------------------------------------------------------------------------------

unit = st.floats(0.0, 1.0)


@st.composite
def chains(draw: st.DrawFn) -> GilbertElliott:
    return GilbertElliott(
        p_good_to_bad=draw(unit),
        p_bad_to_good=draw(st.floats(0.01, 1.0)),
        loss_bad=draw(unit),
        loss_good=draw(unit),
    )


@st.composite
def spike_configs(draw: st.DrawFn) -> Spikes:
    amplitude = draw(st.floats(0.0, 0.2))
    duration = amplitude + draw(st.floats(0.0, 0.2))
    jitter = draw(st.floats(0.0, 0.1))
    period = duration + 2 * jitter + draw(st.floats(0.001, 1.0))
    return Spikes(
        amplitude_s=amplitude,
        duration_s=duration,
        period_s=period,
        phase_jitter_s=jitter,
        offset_s=draw(st.floats(0.0, 1.0)),
    )


@st.composite
def traces(draw: st.DrawFn) -> Trace:
    kind: TraceKind = draw(st.sampled_from(["opportunities", "rate", "delay"]))
    # Whole milliseconds, as recorded traces have them.
    gaps_ms = draw(st.lists(st.integers(0, 50), min_size=1, max_size=8))
    times = [sum(gaps_ms[1 : i + 1]) / 1000 for i in range(len(gaps_ms))]
    period = times[-1] + draw(st.integers(1, 100)) / 1000
    if kind == "opportunities":
        values = [draw(st.sampled_from([100.0, 1500.0, 9000.0])) for _ in times]
    elif kind == "rate":
        values = [draw(st.sampled_from([0.0, 1e6, 1e7, 5e7])) for _ in times]
        ends = [*times[1:], period]
        if not any(v > 0 and end > t for v, t, end in zip(values, times, ends, strict=True)):
            # Some time at a positive rate: see test_rate_trace_without_time_at_a_rate_is_refused
            values[-1] = 1e6
    else:
        values = [draw(st.floats(0.0, 0.5)) for _ in times]
    return trace(kind, times, values, period)


@st.composite
def link_configs(draw: st.DrawFn) -> LinkConfig:
    the_trace = draw(st.none() | traces())
    rate = draw(st.none() | st.floats(1e4, 1e9))
    served = rate is not None or (the_trace is not None and the_trace.kind != "delay")
    starts = draw(st.lists(st.floats(0.0, 5.0), max_size=3))
    return LinkConfig(
        delay_s=draw(st.floats(0.0, 1.0)),
        jitter_s=draw(st.floats(0.0, 0.2)),
        jitter_shape=draw(st.sampled_from(["uniform", "normal", "pareto"])),
        jitter_keeps_order=draw(st.booleans()),
        loss=draw(unit),
        burst=draw(st.none() | chains()),
        reorder=draw(unit),
        reorder_delay_s=draw(st.floats(0.0, 0.1)),
        duplicate=draw(unit),
        rate_bps=rate,
        queue_packets=draw(st.none() | st.integers(1, 50)) if served else None,
        spikes=draw(st.none() | spike_configs()),
        trace=the_trace,
        blackouts=tuple((s, s + draw(st.floats(0.0, 1.0))) for s in starts),
    )


SENDS = st.lists(st.tuples(st.floats(0.0, 0.05), st.integers(1, 65_507)), min_size=1, max_size=60)
"""Gaps between datagrams and their sizes."""


@PROPERTY
@given(
    config=link_configs(),
    seed=st.integers(0, 2**32),
    sends=SENDS,
)
def test_any_valid_config_gives_sane_answers(
    config: LinkConfig, seed: int, sends: list[tuple[float, int]]
) -> None:
    impairment = Impairment(config, seed)
    now = 0.0
    for gap, size in sends:
        now += gap
        answer = impairment.deliveries(size, now)
        assert len(answer) <= 2
        assert all(math.isfinite(at) and at >= now for at in answer), (answer, now)
        if config.queue_packets is not None:
            assert impairment.queue_depth(now) <= config.queue_packets
    counters = impairment.counters
    assert counters.datagrams_in == len(sends)
    assert counters.bytes_in == sum(size for _, size in sends)
    assert counters.datagrams_in == counters.delivered - counters.duplicated + counters.dropped
    if config.queue_packets is not None:
        assert counters.queue_peak <= config.queue_packets


@PROPERTY
@given(
    config=link_configs(),
    seed=st.integers(0, 2**32),
    sends=SENDS,
)
def test_without_jitter_or_reorder_the_link_is_fifo(
    config: LinkConfig, seed: int, sends: list[tuple[float, int]]
) -> None:
    # Queues serve in order and spikes drain at most as fast as time passes ("a stalled link
    # releases its backlog in order"); only jitter, reordering, duplicates' copies and a delay
    # trace stepping down may reorder.
    served = config.trace if config.trace is not None and config.trace.kind != "delay" else None
    impairment = Impairment(replace(config, jitter_s=0.0, reorder=0.0, trace=served), seed)
    now = 0.0
    firsts: list[float] = []
    for gap, size in sends:
        now += gap
        answer = impairment.deliveries(size, now)
        firsts.extend(answer[:1])
    assert all(later >= earlier - 1e-9 for earlier, later in itertools.pairwise(firsts))


# -- validation ----------------------------------------------------------------------------------

DELAY_TRACE = trace("delay", [0.0], [0.01], 1.0)
BAD_CONFIGS: list[tuple[Callable[[], object], str]] = [
    (lambda: LinkConfig(delay_s=-0.001), "delay_s must not be negative"),
    (lambda: LinkConfig(jitter_s=-1.0), "jitter_s must not be negative"),
    (lambda: LinkConfig(reorder_delay_s=-1.0), "reorder_delay_s must not be negative"),
    (lambda: LinkConfig(loss=1.5), "loss must be within 0..1"),
    (lambda: LinkConfig(loss=-0.1), "loss must be within 0..1"),
    (lambda: LinkConfig(reorder=2.0), "reorder must be within 0..1"),
    (lambda: LinkConfig(duplicate=1.01), "duplicate must be within 0..1"),
    (lambda: LinkConfig(jitter_shape="gauss"), "jitter shape must be one of"),  # type: ignore[arg-type]
    (lambda: LinkConfig(rate_bps=0.0), "rate_bps must be positive"),
    (lambda: LinkConfig(rate_bps=-5.0), "rate_bps must be positive"),
    (lambda: LinkConfig(rate_bps=1e6, queue_packets=0), "queue_packets must be at least 1"),
    (lambda: LinkConfig(blackouts=((2.0, 1.0),)), "must not end before it starts"),
    (lambda: LinkConfig(queue_packets=10), "queue_packets needs"),
    (lambda: LinkConfig(queue_packets=10, trace=DELAY_TRACE), "queue_packets needs"),
    (lambda: GilbertElliott(p_good_to_bad=1.5, p_bad_to_good=0.5), "p_good_to_bad"),
    (lambda: GilbertElliott(p_good_to_bad=0.1, p_bad_to_good=0.0), "must be left"),
    (lambda: GilbertElliott.from_loss(1.0, 4), "loss rate must be within"),
    (lambda: GilbertElliott.from_loss(0.1, 0.5), "at least one datagram"),
]


@pytest.mark.parametrize(("make", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_invalid_configs_are_refused_with_a_message(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()


NAN = float("nan")


INF = float("inf")


# NaN slipped through `x < 0` checks (delay_s=nan was silently 0, reorder_delay_s=nan gave a
# NaN delivery time, Spikes(period_s=nan) made deliveries() raise): now refused up front.
@pytest.mark.parametrize(
    "make",
    [
        lambda: LinkConfig(delay_s=NAN),
        lambda: LinkConfig(delay_s=INF),
        lambda: LinkConfig(jitter_s=NAN),
        lambda: LinkConfig(reorder_delay_s=NAN),
        lambda: LinkConfig(rate_bps=NAN),
        lambda: LinkConfig(loss=NAN),
        lambda: LinkConfig(blackouts=((1.0, NAN),)),
        lambda: Spikes(amplitude_s=0.01, duration_s=0.02, period_s=NAN),
        lambda: Spikes(amplitude_s=NAN, duration_s=0.02, period_s=1.0),
        lambda: Spikes(amplitude_s=0.01, duration_s=0.02, period_s=INF),
        lambda: GilbertElliott.from_loss(0.1, NAN),
    ],
    ids=[
        "delay-nan",
        "delay-inf",
        "jitter",
        "reorder_delay",
        "rate",
        "loss",
        "blackout",
        "spike_period",
        "spike_amplitude",
        "spike_period_inf",
        "burst_length",
    ],
)
def test_non_finite_numbers_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_clean_config_is_clean() -> None:
    assert LinkConfig().is_clean
    assert not LinkConfig(delay_s=0.001).is_clean
    assert not LinkConfig().blackout(0.0, 1.0).is_clean
    _, answers = run(LinkConfig(), [0.0, 1.5, 1.5])
    assert answers == [[0.0], [1.5], [1.5]]
