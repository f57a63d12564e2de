"""The link estimate of a session: ARRIVALS negotiation and exchange, stats().link, events."""

from __future__ import annotations

import dataclasses
import json
import random

from hypothesis import given
from hypothesis import strategies as st

from bench.impair import Impairment, LinkConfig
from bench.simlink import SimNetwork
from transport.config import UNRELIABLE, SessionConfig
from transport.estimator import DeliveryRate, LossTracker
from transport.events import Closed, LinkQualityChanged
from transport.link import LinkEstimator
from transport.rtt import RttEstimator
from transport.wire import MAX_ARRIVALS

ONE_WAY = LinkConfig(delay_s=0.02)


def _stream(net: SimNetwork, seconds: float, pps: float = 200.0) -> None:
    net.send_many(
        "client",
        (bytes(800) for _ in range(int(seconds * pps))),
        channel=UNRELIABLE,
        interval_s=1 / pps,
    )
    net.run_for(seconds)


def test_arrivals_feed_the_senders_estimate() -> None:
    net = SimNetwork(seed=3, c2s=LinkConfig(delay_s=0.02, jitter_s=0.003), s2c=ONE_WAY)
    net.connect()
    _stream(net, 3.0)
    link = net.client.stats(net.now).link
    assert link.samples > 300
    assert link.jitter_ms is not None and 2.0 < link.jitter_ms < 5.0
    assert link.rtt_ms is not None and 30 < link.rtt_ms < 50
    assert link.owd_trend in ("steady", "falling", "rising")
    assert link.quality == "good"
    # The pure receiver's outgoing path carries ACKs and keepalives: its RTT and class are
    # measured all the same (its ACK-only packets' arrivals come back with the client's ACKs).
    server_link = net.session("server").stats(net.now).link
    assert server_link.rtt_ms is not None and server_link.quality == "good"
    json.dumps(dataclasses.asdict(link))  # the JSON form the commands print


def test_goodput_is_the_acknowledged_payload_rate() -> None:
    net = SimNetwork(seed=3, c2s=ONE_WAY)
    net.connect()
    _stream(net, 3.0)
    # 200 packets/s of 800 bytes plus an 8-byte fragment header: 1.29 Mbit/s.
    assert 1.2 < net.client.stats(net.now).link.goodput_mbps < 1.35
    net.run_for(5.0)  # nothing but keepalives: goodput falls to their few bytes
    assert net.client.stats(net.now).link.goodput_mbps < 1e-3


def test_arrivals_are_sent_only_to_a_peer_that_asked() -> None:
    # The client does not ask: the server sends no ARRIVALS, the client has no delay samples.
    quiet = SessionConfig(arrival_feedback=False)
    net = SimNetwork(seed=4, config=quiet, server_config=SessionConfig(), c2s=ONE_WAY)
    net.connect()
    _stream(net, 1.0)
    link = net.client.stats(net.now).link
    assert link.samples == 0 and link.jitter_ms is None and link.owd_trend is None
    assert link.rtt_ms is not None  # RTT and loss come from ACKs alone

    # Only the server declines: the client still asked, so it still gets them.
    net = SimNetwork(seed=4, config=SessionConfig(), server_config=quiet, c2s=ONE_WAY)
    net.connect()
    _stream(net, 1.0)
    assert net.client.stats(net.now).link.samples > 100


def test_unasked_arrivals_are_ignored_not_fatal() -> None:
    quiet = SessionConfig(arrival_feedback=False)
    net = SimNetwork(seed=5, config=quiet, server_config=SessionConfig(), c2s=ONE_WAY)
    server = net.connect()
    server._peer_wants_arrivals = True  # a peer that sends them anyway
    _stream(net, 1.0)
    assert not any(isinstance(e, Closed) for e in net.client_events + net.server_events)
    assert net.client.stats(net.now).link.samples == 0


def test_receiver_keeps_a_bounded_number_of_records_without_acks() -> None:
    net = SimNetwork(seed=6, c2s=ONE_WAY)
    server = net.connect()
    client = net.client
    for i in range(500):  # reads that are never answered: no ACK carries the records away
        client.send(bytes(100), channel=UNRELIABLE, now=net.now + i * 0.002)
        for datagram, _ in client.datagrams_to_send(net.now + i * 0.002):
            server.receive_datagram(datagram, ("192.0.2.1", 1), net.now + 0.02 + i * 0.002)
    assert len(server._arrivals) == MAX_ARRIVALS


def test_quality_falls_within_half_a_second_of_a_loss_step() -> None:
    net = SimNetwork(seed=7, c2s=ONE_WAY, s2c=ONE_WAY)
    net.connect()
    _stream(net, 3.0)
    assert net.client.stats(net.now).link.quality == "good"
    step_at = net.now
    lossy = LinkConfig(delay_s=0.02, loss=0.15)
    net.links["c2s"].impairment = Impairment(lossy, "step")
    _stream(net, 2.0)
    changes = [
        (t, e) for t, e in net.client_log if isinstance(e, LinkQualityChanged) and t >= step_at
    ]
    assert changes, "no LinkQualityChanged after the step"
    at, event = changes[0]
    assert at - step_at <= 0.5
    assert event.previous == "good" and event.quality in ("moderate", "minimal")
    assert event.link.loss_pct > 1.0


def test_reordering_is_not_counted_as_loss() -> None:
    # Normal jitter of 5 ms at 400 packets/s reorders constantly: the packet threshold
    # declares losses, the late acknowledgements take them back.
    net = SimNetwork(seed=8, c2s=LinkConfig(delay_s=0.02, jitter_s=0.005), s2c=ONE_WAY)
    net.connect()
    _stream(net, 3.0, pps=400)
    sender = net.client._sender
    assert sender is not None and sender.spurious_losses > 20
    assert net.client.stats(net.now).link.loss_pct < 0.5


# -- the pieces -----------------------------------------------------------------------------


def test_loss_tracker_runs_and_spurious_losses() -> None:
    tracker = LossTracker()
    tracker.on_outcomes(9, 10, True, 0.0)  # packets 0-9 delivered
    tracker.on_outcome(10, False, 0.0)
    tracker.on_outcomes(20, 10, True, 0.05)
    assert tracker.loss_total_pct == 100 / 21
    tracker.on_outcomes(15, 3, True, 0.06)  # overlaps what was seen: refused whole
    assert tracker.ignored == 3
    tracker.on_spurious()  # packet 10 was only late
    assert tracker.loss_total_pct == 0.0 and tracker.burst_loss == 0.0


def test_delivery_rate_finds_no_bottleneck_in_plain_jitter() -> None:
    rate = DeliveryRate()
    rng = random.Random(1)
    for pn in range(20_000):  # 400 packets/s, 5 ms jitter, no rate limit
        send = pn / 400
        rate.on_packet(pn, send, send + 0.02 + abs(rng.gauss(0, 0.005)), 1000)
    assert rate.bandwidth_bps is None


@given(
    records=st.lists(
        st.tuples(
            # Mostly packet numbers the estimator remembers, so the records reach its maths.
            st.integers(0, 120) | st.integers(0, 1 << 40),
            st.integers(0, 200_000) | st.integers(0, 1 << 50),
            st.integers(0, 200) | st.integers(0, 1 << 40),
            st.integers(0, 200_000) | st.integers(0, 1 << 50),
        ),
        max_size=40,
    )
)
def test_link_estimator_takes_any_records(records: list[tuple[int, int, int, int]]) -> None:
    link = LinkEstimator()
    for pn in range(100):
        link.on_sent(pn, pn * 0.001, pn % 3 == 0)
    link.on_arrivals(tuple(records))
    link.on_arrivals(tuple((pn, pn * 1000 + 20_000, pn, pn * 1000) for pn in range(100)))
    rtt = RttEstimator(0.1, 0.05, 2.0)
    link.refresh(1.0, rtt, LossTracker(), 0, 0)
    link.snapshot(1.0, rtt, LossTracker())
