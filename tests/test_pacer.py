"""The pacer: a token bucket with a small burst allowance and no idle credit beyond it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.pacer import Pacer, PacerConfig

MSS = 1200


def drain(pacer: Pacer, sizes: list[int], start: float) -> list[float]:
    """Send ``sizes`` back to back, each as early as the pacer allows; their send times."""
    times, now = [], start
    for size in sizes:
        now = max(now, pacer.next_send_s(now, size))
        pacer.on_sent(now, size)
        times.append(now)
    return times


def test_unpaced_sends_everything_now() -> None:
    pacer = Pacer()
    assert pacer.rate_bps is None
    for i in range(1000):
        assert pacer.next_send_s(1.0, MSS) == 1.0
        pacer.on_sent(1.0 + i * 1e-9, MSS)
    pacer.set_rate(1e6)
    pacer.set_rate(None)
    assert pacer.next_send_s(2.0, 10**6) == 2.0


def test_a_150kb_frame_is_spread_over_its_serialisation_time() -> None:
    pacer = Pacer()
    pacer.set_rate(10e6)
    assert pacer.burst_bytes == 6_250  # 5 ms of 10 Mbit/s
    times = drain(pacer, [MSS] * 125, start=3.0)
    ideal = 125 * MSS * 8 / 10e6  # 120 ms
    span = times[-1] - times[0]
    burst_s = pacer.burst_bytes * 8 / 10e6
    assert ideal - burst_s <= span <= ideal
    # The first packets leave together (the burst), then one per 0.96 ms.
    assert times[:5] == [3.0] * 5
    gaps = [b - a for a, b in itertools.pairwise(times[5:])]
    assert gaps == pytest.approx([MSS * 8 / 10e6] * len(gaps))


def test_an_idle_period_earns_one_burst_only() -> None:
    pacer = Pacer()
    pacer.set_rate(10e6)
    drain(pacer, [MSS] * 50, start=0.0)
    times = drain(pacer, [MSS] * 50, start=100.0)  # after 100 s idle
    at_once = sum(1 for t in times if t == 100.0)
    assert at_once * MSS <= pacer.burst_bytes
    assert times[-1] - 100.0 >= (50 * MSS - pacer.burst_bytes) * 8 / 10e6 - 1e-12


def test_burst_is_at_least_two_packets() -> None:
    pacer = Pacer(PacerConfig(burst_s=0.005, min_burst_packets=2, mss_bytes=MSS))
    pacer.set_rate(100e3)  # 5 ms of it is 62 bytes
    assert pacer.burst_bytes == 2 * MSS
    times = drain(pacer, [MSS] * 3, start=0.0)
    assert times == [0.0, 0.0, pytest.approx(MSS * 8 / 100e3)]


def test_a_rate_change_takes_effect_from_the_next_packet() -> None:
    pacer = Pacer()
    pacer.set_rate(1e6)
    slow = drain(pacer, [MSS] * 10, start=0.0)
    assert slow[-1] - slow[-2] == pytest.approx(MSS * 8 / 1e6)
    pacer.set_rate(10e6)
    fast = drain(pacer, [MSS] * 10, start=slow[-1])
    assert fast[-1] - fast[-2] == pytest.approx(MSS * 8 / 10e6)
    # And the way down: no leftover budget from the fast rate beyond the new burst.
    pacer.set_rate(1e6)
    assert pacer.burst_bytes == 2 * MSS
    again = drain(pacer, [MSS] * 4, start=fast[-1] + 1.0)
    assert again[2] - again[1] == pytest.approx(MSS * 8 / 1e6)


def test_next_send_is_pure() -> None:
    pacer = Pacer()
    pacer.set_rate(1e6)
    drain(pacer, [MSS] * 5, start=0.0)
    first = pacer.next_send_s(0.0, MSS)
    assert first > 0.0
    assert pacer.next_send_s(0.0, MSS) == first
    assert pacer.next_send_s(first / 2, MSS) == first
    assert pacer.next_send_s(first + 1, MSS) <= first + 1  # may go now


def test_a_packet_larger_than_the_burst_still_leaves() -> None:
    pacer = Pacer(PacerConfig(min_burst_packets=1, mss_bytes=1000))
    pacer.set_rate(80e3)  # burst: 1000 bytes
    times = drain(pacer, [5000, 1000], start=0.0)
    assert times[0] == 0.0
    # It left the bucket 4000 bytes in debt: the next waits for 5000 bytes of refill.
    assert times[1] == pytest.approx(5000 * 8 / 80e3)


@pytest.mark.parametrize(
    "kwargs",
    [{"burst_s": -0.001}, {"burst_s": float("inf")}, {"min_burst_packets": 0}, {"mss_bytes": 0}],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PacerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bps", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_rates_are_refused(bps: float) -> None:
    with pytest.raises(ValueError):
        Pacer().set_rate(bps)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    rate_bps=st.floats(min_value=50e3, max_value=100e6),
    sends=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=MSS),  # size
            st.floats(min_value=0.0, max_value=0.05),  # idle before offering it
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_no_interval_carries_more_than_rate_times_length_plus_burst(
    rate_bps: float, sends: list[tuple[int, float]]
) -> None:
    pacer = Pacer()
    pacer.set_rate(rate_bps)
    now, log = 0.0, []
    for size, idle in sends:
        now += idle
        now = max(now, pacer.next_send_s(now, size))
        pacer.on_sent(now, size)
        log.append((now, size))
    rate_Bps, burst = rate_bps / 8, pacer.burst_bytes
    for i, (start, _) in enumerate(log):
        carried = 0
        for end, size in log[i:]:
            carried += size
            assert carried <= rate_Bps * (end - start) + burst + 1e-6 * burst


def test_bench_pacer_per_packet(benchmark: pytest.FixtureRequest) -> None:
    """One pacing decision and one send record: the pacer's per-packet cost."""
    pacer = Pacer()
    pacer.set_rate(50e6)
    clock = [0.0]

    def one_packet() -> None:
        now = clock[0] = max(clock[0], pacer.next_send_s(clock[0], MSS))
        pacer.on_sent(now, MSS)

    benchmark(one_packet)  # type: ignore[operator]
