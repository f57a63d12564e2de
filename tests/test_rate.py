"""Rate control inside a session: the controller chosen by the config, the target it publishes,
the pacer that spreads a frame's packets, and deadlines that hurry it (simulated link)."""

from __future__ import annotations

import pytest

from bench.impair import LinkConfig
from bench.simlink import SimNetwork
from transport.config import RELIABLE, UNRELIABLE, SessionConfig
from transport.congestion import CongestionController, LinkSignals, NewReno
from transport.events import Message

FPS = 30
GCC = SessionConfig(congestion="gcc")


def _adaptive_source(net: SimNetwork, seconds: float) -> None:
    """Frames of target / 30 bytes, 30 a second, on the reliable channel with a 1 s deadline
    (what an encoder following the target produces)."""
    t0 = net.now
    for i in range(int(seconds * FPS)):

        def frame() -> None:
            target = net.client.target_bitrate_bps
            assert target is not None
            net.client.send(
                bytes(max(200, int(target / FPS / 8))),
                channel=RELIABLE,
                deadline_s=1.0,
                now=net.now,
            )

        net.schedule(t0 + i / FPS, frame)
    net.run_for(seconds)


def _data_times(net: SimNetwork, since: float) -> list[float]:
    """Send times of the client's full-size datagrams (fragments of large messages)."""
    return [
        c.time
        for c in net.captured
        if c.direction == "c2s" and c.time >= since and len(c.data) > 1000
    ]


def test_gcc_publishes_a_target_that_grows_on_a_clean_link() -> None:
    net = SimNetwork(
        seed=1, config=GCC, c2s=LinkConfig(delay_s=0.01, rate_bps=20e6, queue_packets=100)
    )
    net.connect()
    start = net.client.target_bitrate_bps
    assert start is not None and start == pytest.approx(1e6)
    _adaptive_source(net, 6.0)
    stats = net.client.stats(net.now)
    assert stats.link.target_mbps is not None and stats.link.target_mbps > 5.0


def test_target_settles_below_a_bottleneck_without_a_standing_queue() -> None:
    net = SimNetwork(
        seed=2, config=GCC, c2s=LinkConfig(delay_s=0.01, rate_bps=5e6, queue_packets=50)
    )
    net.connect()
    _adaptive_source(net, 12.0)
    samples: list[float] = []
    queue: list[float] = []

    def watch(_: SimNetwork) -> None:
        target = net.client.target_bitrate_bps
        assert target is not None
        samples.append(target)
        link = net.client.stats(net.now).link
        if link.queue_delay_ms is not None:
            queue.append(link.queue_delay_ms)

    net.observers.append(watch)
    _adaptive_source(net, 8.0)
    mean = sum(samples) / len(samples)
    assert 3.5e6 < mean < 5.5e6
    queue.sort()
    assert queue[int(0.95 * len(queue))] < 60.0


def test_pacer_spreads_a_large_frame() -> None:
    """150 KB with no deadline at the start target (1 Mbit/s, paced at 2.5x): its packets
    leave over about 150e3 * 8 / 2.5e6 = 0.48 s, not in one burst."""
    net = SimNetwork(seed=3, config=GCC, c2s=LinkConfig(delay_s=0.01), capture=True)
    net.connect()
    at = net.now
    pacing = net.client.stats(net.now)
    assert pacing.link.target_mbps == pytest.approx(1.0)
    net.client.send(bytes(150_000), channel=UNRELIABLE, now=net.now)
    net.run_for(1.5)
    times = _data_times(net, at)
    assert len(times) >= 120
    assert times[-1] - times[0] > 0.3


def test_a_deadline_hurries_the_pacer() -> None:
    """The same frame with a 100 ms deadline and a 20 ms RTT leaves within half of the
    (100 - 10) ms it has after flight: 45 ms."""
    net = SimNetwork(seed=3, config=GCC, c2s=LinkConfig(delay_s=0.01), capture=True)
    net.connect()
    net.run_for(0.5)  # an RTT sample
    at = net.now
    net.client.send(bytes(150_000), channel=UNRELIABLE, deadline_s=0.1, now=net.now)
    net.run_for(0.5)
    times = _data_times(net, at)
    assert len(times) >= 120
    assert times[-1] - at < 0.050
    assert not net.late("server")


def test_a_hurry_ends_with_its_deadline() -> None:
    """A 20 KB message with a 60 ms deadline hurries the pacer (about 13 Mbit/s); a 150 KB
    message without one, queued with it, goes back to the controller's pace once that
    deadline has passed (0.46 s in all) instead of riding the hurry to its end (0.11 s)."""
    net = SimNetwork(seed=3, config=GCC, c2s=LinkConfig(delay_s=0.01), capture=True)
    net.connect()
    net.run_for(0.5)  # an RTT sample
    at = net.now
    net.client.send(bytes(150_000), channel=RELIABLE, now=net.now)
    net.client.send(bytes(20_000), channel=UNRELIABLE, deadline_s=0.06, now=net.now)
    net.run_for(2.0)
    times = _data_times(net, at)
    assert len(times) >= 140
    assert sum(1 for t in times if t - at < 0.03) >= 30  # hurried at first
    assert times[-1] - at > 0.3  # then paced at the controller's rate


def test_a_link_slower_than_the_lowest_target_keeps_a_bounded_queue() -> None:
    """40 kbit/s, below the 100 kbit/s floor of the target, behind a 300-packet buffer: the
    controller backs off within two seconds although the delay detector has too few packets
    to speak, and the in-flight cap, sized by the path's RTT rather than the queue-inflated
    smoothed RTT, keeps the bottleneck queue to seconds rather than a minute."""
    net = SimNetwork(
        seed=5, config=GCC, c2s=LinkConfig(delay_s=0.02, rate_bps=40e3, queue_packets=300)
    )
    net.connect()
    delays: list[tuple[float, float]] = []
    link = net.links["c2s"]
    inner = link.impairment

    class Watched:
        def deliveries(self, size: int, now: float) -> list[float]:
            out = inner.deliveries(size, now)
            if out:
                delays.append((now, min(out) - now))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

    link.impairment = Watched()  # type: ignore[assignment]
    t0 = net.now
    _adaptive_source(net, 2.5)
    assert net.client.target_bitrate_bps == pytest.approx(100e3)
    _adaptive_source(net, 17.5)
    late = sorted(d for t, d in delays if t > t0 + 10)
    assert late and late[int(0.95 * len(late))] < 6.0  # 64 s with the srtt-sized window


def test_a_message_expiring_at_the_pacer_sends_its_abandon_at_once() -> None:
    """A reliable 150 KB message whose 150 ms deadline passes while the pacer spreads it (a
    400 ms RTT: too late to hurry). When the pacer next lets a packet go, the head of the
    queue expires and queues an ABANDON, and that packet must carry it; the sender once built
    nothing there and stayed due forever (the simulator raises SimulationStuck on that)."""
    net = SimNetwork(seed=3, config=GCC, c2s=LinkConfig(delay_s=0.2), s2c=LinkConfig(delay_s=0.2))
    net.connect()
    net.run_for(1.0)  # RTT samples: 400 ms
    net.client.send(bytes(150_000), channel=RELIABLE, deadline_s=0.15, now=net.now)
    net.run_for(2.0)
    assert net.client.stats(net.now).messages_expired == 1
    after = net.client.send(b"next", channel=RELIABLE, now=net.now)
    net.run_for(1.0)  # delivered: the ABANDON let the receiver skip the expired id
    assert any(
        isinstance(event, Message) and event.message_id == after for _, event in net.server_log
    )


def test_newreno_has_no_target_and_no_pacing() -> None:
    net = SimNetwork(
        seed=3,
        c2s=LinkConfig(delay_s=0.01),
        capture=True,
        config=SessionConfig(congestion="newreno"),
    )
    net.connect()
    assert net.client.target_bitrate_bps is None
    at = net.now
    net.client.send(bytes(30_000), channel=UNRELIABLE, now=net.now)
    net.run_for(0.2)
    times = _data_times(net, at)
    assert len(times) >= 24 and times[-1] - times[0] < 1e-6  # one burst (window 32 packets)
    assert net.client.stats(net.now).link.target_mbps is None


class _FixedRate:
    """A controller of one's own: a fixed target, paced, with a big window."""

    window_bytes = 1 << 20
    target_bps: float | None = 3e6
    pacing_bps: float | None = 3e6

    def __init__(self) -> None:
        self.signals: list[LinkSignals] = []

    def on_acked(self, size: int, sent_at: float, now: float) -> None:
        pass

    def on_lost(self, size: int, sent_at: float, now: float) -> None:
        pass

    def on_timeout(self, now: float) -> None:
        pass

    def on_link(self, signals: LinkSignals) -> None:
        self.signals.append(signals)


def test_a_controller_of_ones_own_plugs_in_through_the_config() -> None:
    made: list[_FixedRate] = []

    def factory(config: SessionConfig) -> CongestionController:
        made.append(_FixedRate())
        return made[-1]

    net = SimNetwork(seed=4, c2s=LinkConfig(delay_s=0.01), config=SessionConfig(congestion=factory))
    net.connect()
    net.send_many("client", (bytes(1000) for _ in range(200)), channel=UNRELIABLE, interval_s=0.005)
    net.run_for(1.5)
    assert net.client.target_bitrate_bps == 3e6
    assert len(made) == 2  # the client's and the listener's session's
    controller = max(made, key=lambda c: len(c.signals))  # the sender's
    assert len(controller.signals) > 10
    last = controller.signals[-1]
    assert last.rtt_s is not None and 0.015 < last.rtt_s < 0.03
    assert last.delivered_bps is not None and 1e6 < last.delivered_bps < 2.5e6
    assert last.trend in ("steady", "rising", "falling")


def test_newreno_satisfies_the_protocol() -> None:
    controller: CongestionController = NewReno(1200, 32, 4)
    assert controller.target_bps is None and controller.pacing_bps is None


@pytest.mark.parametrize(
    "options",
    [{"congestion": "cubic"}, {"congestion": "gcc", "arrival_feedback": False}, {"congestion": 5}],
)
def test_congestion_setting_is_validated(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SessionConfig(**options)  # type: ignore[arg-type]
