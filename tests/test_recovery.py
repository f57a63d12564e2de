"""Loss recovery within deadlines (PROTOCOL.md §4.9, §4.10, §8.10): the NACK and PARITY
codecs, the parity policy, group building and rebuilding, the deadline rule, and the whole
thing on the simulated link. Deterministic: fixed seeds, a fake clock, derandomized
Hypothesis.
"""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.impair import GilbertElliott
from bench.simlink import Direction, LinkConfig, SimNetwork, next_packet_number, packet_number
from transport import packet as pk
from transport import wire
from transport.config import LATEST, RELIABLE, UNRELIABLE, ChannelKind, SessionConfig
from transport.congestion import NewReno
from transport.errors import DecodeError
from transport.events import Event, Message, MessageLate
from transport.parity import (
    MAX_GROUP_PIECES,
    RESIDUAL_TARGET,
    ParityBudget,
    ParityDecoder,
    across_data,
    across_shard,
    group_ends,
    pad,
    parity_count,
    residual_target,
)
from transport.reassembly import ACCEPTED, VIOLATION, Reassembler
from transport.rtt import RttEstimator
from transport.sender import Sender
from transport.stats import Counters

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)
DELAY_S = 0.010


# -- NACK codec ---------------------------------------------------------------------------------


@st.composite
def nack_requests(draw: st.DrawFn) -> wire.NackRequest:
    ranges = []
    offset = draw(st.integers(0, 1 << 20))
    for _ in range(draw(st.integers(0, wire.MAX_NACK_RANGES))):
        length = draw(st.integers(1, 1 << 16))
        ranges.append((offset, length))
        offset += length + draw(st.integers(0, 5000))
    return wire.NackRequest(
        draw(st.integers(0, 255)), draw(st.integers(0, wire.MAX_VARINT)), tuple(ranges)
    )


@FAST
@given(requests=st.lists(nack_requests(), min_size=1, max_size=wire.MAX_NACK_MESSAGES))
def test_nack_round_trip(requests: list[wire.NackRequest]) -> None:
    [frame] = wire.parse_frames(wire.encode_nack(requests))
    assert frame == wire.NackFrame(tuple(requests))


def test_nack_limits_are_refused_both_ways() -> None:
    one = wire.NackRequest(1, 5, ((0, 10),))
    with pytest.raises(ValueError):
        wire.encode_nack([])
    with pytest.raises(ValueError):
        wire.encode_nack([one] * (wire.MAX_NACK_MESSAGES + 1))
    with pytest.raises(ValueError):
        wire.encode_nack([wire.NackRequest(1, 5, ((0, 1),) * (wire.MAX_NACK_RANGES + 1))])
    for ranges in (((0, 0),), ((10, 5), (12, 5)), ((10, 5), (3, 1))):
        with pytest.raises(ValueError):
            wire.encode_nack([wire.NackRequest(1, 5, ranges)])
    for bad in (
        b"\x07",  # no count
        b"\x07\x00",  # no request
        bytes((7, wire.MAX_NACK_MESSAGES + 1)) + b"\x00\x00\x00" * 40,
        b"\x07\x01\x00\x05",  # no range count
        bytes((7, 1, 0, 5, wire.MAX_NACK_RANGES + 1)) + b"\x00\x01" * 20,
        b"\x07\x01\x00\x05\x01\x00\x00",  # an empty range
        b"\x07\x01\x00\x05\x02\x0a\x05\x0c\x05",  # overlapping ranges
        b"\x07\x01\x00\x05\x01\x0a",  # truncated range
    ):
        with pytest.raises(DecodeError):
            wire.parse_frames(bad)


# -- PARITY codec -------------------------------------------------------------------------------


@st.composite
def parity_frames(draw: st.DrawFn) -> wire.ParityFrame:
    across = draw(st.booleans())
    k = draw(st.integers(1, 40))
    m = draw(st.integers(1, 20))
    length = draw(st.integers(1, 300))
    mid = draw(st.integers(0, 1 << 40))
    members: tuple[int, ...] = ()
    total = first = 0
    if across:
        steps = draw(st.lists(st.integers(1, 1000), min_size=k - 1, max_size=k - 1))
        ids = [mid]
        for step in steps:
            ids.append(ids[-1] + step)
        members = tuple(ids)
    else:
        first = draw(st.integers(0, 1 << 24))
        total = first + (k - 1) * length + draw(st.integers(1, length))
    return wire.ParityFrame(
        kind=draw(st.integers(0, 2)),
        channel=draw(st.integers(0, 255)),
        message_id=mid,
        across=across,
        total_len=total,
        first_offset=first,
        lifetime_us=draw(st.one_of(st.none(), st.integers(0, (1 << 30) - 1))),
        k=k,
        m=m,
        index=draw(st.integers(0, m - 1)),
        members=members,
        data=draw(st.binary(min_size=length, max_size=length)),
    )


@FAST
@given(frame=parity_frames())
def test_parity_round_trip(frame: wire.ParityFrame) -> None:
    encoded = wire.encode_parity(frame)
    assert wire.parse_frames(encoded) == [frame]
    # Beside other frames, too: the frame says where it ends.
    assert wire.parse_frames(wire.PING_BYTES + encoded + wire.PING_BYTES)[1] == frame


def test_parity_bad_groups_are_refused_both_ways() -> None:
    good = wire.ParityFrame(
        kind=1,
        channel=1,
        message_id=7,
        across=False,
        total_len=100,
        first_offset=0,
        lifetime_us=None,
        k=2,
        m=1,
        index=0,
        members=(),
        data=bytes(50),
    )
    wire.parse_frames(wire.encode_parity(good))
    for bad in (
        {"k": 0},
        {"index": 1},
        {"k": 200, "m": 56},
        {"data": b""},
        {"across": True, "members": (7,)},  # k members needed
        {"across": True, "k": 2, "members": (7, 7)},  # must increase
    ):
        frame = wire.ParityFrame(**{**_fields(good), **bad})
        with pytest.raises(ValueError):
            wire.encode_parity(frame)
    encoded = wire.encode_parity(good)
    header = len(encoded) - 50
    for data in (
        encoded[:header] + encoded[header:-1],  # shard cut short
        bytes((wire.PARITY, 0x10)) + encoded[2:],  # a reserved flag
        bytes((wire.PARITY, 0x03)) + encoded[2:],  # kind 3
        encoded.replace(bytes((2, 1, 0)), bytes((2, 0, 0)), 1),  # m = 0
        encoded.replace(bytes((2, 1, 0)), bytes((2, 1, 1)), 1),  # index >= m
        # total_len 50: the second member would start at the end of the message.
        encoded.replace(bytes((wire.PARITY, 1, 1, 7, 0x40, 100)), bytes((8, 1, 1, 7, 50)), 1),
        encoded[:5],
    ):
        with pytest.raises(DecodeError):
            wire.parse_frames(data)


def _fields(frame: wire.ParityFrame) -> dict[str, object]:
    return {name: getattr(frame, name) for name in wire.ParityFrame.__slots__}


# -- the parity policy --------------------------------------------------------------------------


def test_parity_count_grows_with_loss_and_burst_and_is_zero_without_loss() -> None:
    assert parity_count(7, 0.0, 0.0) == 0
    counts = [parity_count(7, loss, 1.0) for loss in (0.5, 1, 2, 5, 10, 20)]
    assert counts == sorted(counts) and counts[0] >= 1
    assert parity_count(7, 5, 1.0) == 2  # P(more than 2 of 9 lost at 5 %) < 1 %
    assert parity_count(53, 5, 1.0) == 7  # P(more than 7 of 60 lost at 5 %) = 0.98 %
    assert parity_count(20, 5, 3.0) > parity_count(20, 5, 1.0)  # bursts ask for more
    # A looser target (NACK repairs the rest) asks for less, and none at all past 1.
    assert parity_count(7, 5, 1.0, 0.1) == 1
    assert parity_count(7, 5, 1.0, 1.0) == 0


def test_residual_target_counts_nack_rounds() -> None:
    assert residual_target(5, 0) == RESIDUAL_TARGET
    one = residual_target(5, 1)
    assert one == pytest.approx(RESIDUAL_TARGET / (1 - 0.95**2), abs=1e-3)
    assert residual_target(5, 3) == 1.0
    assert residual_target(1, 1) > 0.4  # at 1 % one NACK round does almost everything


@FAST
@given(
    ratio=st.floats(0.05, 1.0),
    groups=st.lists(
        st.tuples(st.integers(0, 40), st.integers(1, 1200), st.integers(1, 80_000)),
        min_size=1,
        max_size=60,
    ),
)
def test_budget_keeps_parity_within_the_overhead_on_average(
    ratio: float, groups: list[tuple[int, int, int]]
) -> None:
    budget = ParityBudget(ratio)
    spent = data = 0
    largest = 0
    for wanted, shard, size in groups:
        granted = budget.grant(wanted, shard, size)
        assert 0 <= granted <= wanted
        spent += granted * shard
        data += size
        largest = max(largest, shard)
    assert spent <= ratio * data + largest  # at most one shard carried over


@FAST
@given(pieces=st.integers(1, 2000))
def test_group_ends_cut_a_message_into_even_groups(pieces: int) -> None:
    ends = group_ends(pieces)
    sizes = [b - a for a, b in zip((0, *ends), ends, strict=False)]
    assert ends[-1] == pieces
    assert all(0 < size <= MAX_GROUP_PIECES for size in sizes)
    assert max(sizes) - min(sizes) <= 1


@FAST
@given(data=st.binary(max_size=300), padding=st.integers(0, 20))
def test_across_shard_round_trip(data: bytes, padding: int) -> None:
    shard = across_shard(data)
    assert across_data(shard + bytes(padding)) == data
    assert across_data(shard[:-1]) is None or data == b""


# -- rebuilding ---------------------------------------------------------------------------------


def _receiver() -> tuple[Reassembler, ParityDecoder, Counters, deque[Event]]:
    config = SessionConfig()
    counters = Counters()
    events: deque[Event] = deque()
    reassembler = Reassembler(config, counters, events)
    reassembler.track = True
    return reassembler, ParityDecoder(config, reassembler, counters), counters, events


def _intra_parity(
    message: bytes, mid: int, first: int, k: int, m: int, size: int, kind: int = 1
) -> list[wire.ParityFrame]:
    from transport import fec

    shards = pad([message[first + j * size : first + (j + 1) * size] for j in range(k)], size)
    return [
        wire.ParityFrame(
            kind=kind,
            channel=UNRELIABLE,
            message_id=mid,
            across=False,
            total_len=len(message),
            first_offset=first,
            lifetime_us=50_000,
            k=k,
            m=m,
            index=i,
            members=(),
            data=shard,
        )
        for i, shard in enumerate(fec.encode(shards, m))
    ]


@FAST
@given(
    k=st.integers(1, 12),
    m=st.integers(1, 4),
    size=st.integers(5, 200),
    short=st.integers(1, 200),
    order=st.randoms(use_true_random=False),
)
def test_any_k_of_k_plus_m_rebuild_the_message(
    k: int, m: int, size: int, short: int, order: random.Random
) -> None:
    """Pieces of one message, the last one short: whichever k of the k + m shards arrive,
    the message is delivered whole, once, and the rebuilt pieces are counted."""
    short = min(short, size)
    message = random.Random(k * m).randbytes((k - 1) * size + short)
    parity = _intra_parity(message, 3, 0, k, m, size)
    kept = set(order.sample(range(k + m), k))
    reassembler, decoder, counters, events = _receiver()
    for j in range(k):
        if j in kept:
            piece = message[j * size : (j + 1) * size]
            status = reassembler.on_piece(
                1, UNRELIABLE, 3, len(message), j * size, 50_000, piece, 0.0
            )
            assert status == ACCEPTED
    for i, frame in enumerate(parity):
        if k + i in kept:
            assert decoder.on_parity(frame, 0.001) == ACCEPTED
    delivered = [e for e in events if isinstance(e, Message)]
    assert delivered == [Message(channel=UNRELIABLE, message_id=3, data=message)]
    assert counters.fec_recovered == k - len([j for j in kept if j < k])
    assert not decoder.pending and reassembler.held_bytes == 0
    # More parity after the fact changes nothing and is not kept.
    for frame in parity:
        decoder.on_parity(frame, 0.002)
    assert len([e for e in events if isinstance(e, Message)]) == 1
    assert not decoder.pending


def test_parity_waits_for_a_repair_then_rebuilds() -> None:
    message = random.Random(1).randbytes(1000)
    [parity] = _intra_parity(message, 0, 0, 4, 1, 250)
    reassembler, decoder, counters, events = _receiver()
    for j in (0, 3):
        reassembler.on_piece(1, UNRELIABLE, 0, 1000, j * 250, 50_000, message[j * 250 :][:250], 0)
    assert decoder.on_parity(parity, 0.0) == ACCEPTED
    assert decoder.pending and not events  # two missing, one parity: not yet
    reassembler.on_piece(1, UNRELIABLE, 0, 1000, 250, 50_000, message[250:500], 0.001)
    assert decoder.retry(0.001) == ACCEPTED
    assert [e.data for e in events if isinstance(e, Message)] == [message]
    assert counters.fec_recovered == 1 and not decoder.pending


def test_parity_contradicting_the_message_is_a_violation_and_groups_expire() -> None:
    message = random.Random(2).randbytes(1000)
    [parity] = _intra_parity(message, 0, 0, 4, 1, 250)
    reassembler, decoder, _, _ = _receiver()
    reassembler.on_piece(1, UNRELIABLE, 0, 999, 0, 50_000, message[:250], 0.0)
    assert decoder.on_parity(parity, 0.0) == VIOLATION  # total_len 1000 vs 999

    reassembler, decoder, _, _ = _receiver()
    assert decoder.on_parity(parity, 1.0) == ACCEPTED  # nothing of it yet: kept
    assert decoder.pending and decoder.next_timer() == pytest.approx(1.05)
    decoder.handle_timer(1.05)
    assert not decoder.pending and decoder.held_bytes == 0


def test_group_across_messages_rebuilds_the_missing_ones_once() -> None:
    from transport import fec

    messages = {10 + i: random.Random(i).randbytes(20 + 13 * i) for i in range(5)}
    members = tuple(messages)
    shards = [across_shard(messages[mid]) for mid in members]
    size = max(map(len, shards))
    frames = [
        wire.ParityFrame(
            kind=1,
            channel=UNRELIABLE,
            message_id=members[0],
            across=True,
            total_len=0,
            first_offset=0,
            lifetime_us=80_000,
            k=5,
            m=2,
            index=i,
            members=members,
            data=shard,
        )
        for i, shard in enumerate(fec.encode(pad(shards, size), 2))
    ]
    reassembler, decoder, counters, events = _receiver()
    for mid in (10, 12, 14):  # 11 and 13 lost
        data = messages[mid]
        reassembler.on_piece(1, UNRELIABLE, mid, len(data), 0, 80_000, data, 0.0)
    for frame in frames:
        decoder.on_parity(frame, 0.001)
    delivered = {e.message_id: e.data for e in events if isinstance(e, Message)}
    assert delivered == messages
    assert counters.fec_recovered == 2
    # The originals arriving late (or a repair) are not delivered again.
    for mid in (11, 13):
        data = messages[mid]
        assert reassembler.on_piece(1, UNRELIABLE, mid, len(data), 0, 80_000, data, 0.1) == 0
    assert len([e for e in events if isinstance(e, Message)]) == 5


# -- the deadline rule at the sender ------------------------------------------------------------


def _sender(srtt_s: float = 0.020, **kwargs: bool) -> tuple[Sender, Counters]:
    config = SessionConfig()
    counters = Counters()
    rtt = RttEstimator(config.initial_rtt_s, config.min_rto_s, config.max_rto_s)
    rtt.update(srtt_s, 0.0)
    congestion = NewReno(config.max_datagram_bytes, 1000, 4)
    return Sender(config, counters, rtt, congestion, nack=True, **kwargs), counters


def _fragments(payload: bytes | None) -> list[wire.FragmentFrame]:
    if payload is None:
        return []
    return [f for f in wire.parse_frames(payload) if isinstance(f, wire.FragmentFrame)]


@pytest.mark.parametrize(
    ("nack_at", "repaired", "too_late"),
    [(0.0, True, 0), (0.0199, True, 0), (0.0201, False, 1), (0.025, False, 1), (0.03, False, 0)],
)
def test_nack_repairs_only_what_can_arrive_before_the_deadline(
    nack_at: float, repaired: bool, too_late: int
) -> None:
    """Deadline 30 ms, srtt 20 ms: a repair leaves only while now + srtt/2 < deadline (and
    at the deadline the message is no longer held at all)."""
    sender, counters = _sender()
    mid = sender.queue_message(UNRELIABLE, bytes(3000), deadline=0.030, now=0.0)
    sent = [sender.build(0.0, pn, None, False) for pn in range(3)]
    assert [len(_fragments(p)) for p in sent] == [1, 1, 1]
    chunk = len(_fragments(sent[0])[0].data)  # bytes 1200..1209 lie in the second piece
    sender.on_nack(wire.NackFrame((wire.NackRequest(UNRELIABLE, mid, ((1200, 10),)),)), nack_at)
    repair = _fragments(sender.build(nack_at, 3, None, False))
    assert [(f.message_id, f.offset) for f in repair] == ([(mid, chunk)] if repaired else [])
    assert counters.nacks_received == 1
    assert counters.repairs_too_late == too_late
    assert counters.retransmissions == int(repaired)


def test_nack_for_a_whole_message_and_not_twice_within_a_round_trip() -> None:
    sender, counters = _sender()
    mid = sender.queue_message(UNRELIABLE, b"state", deadline=0.1, now=0.0)
    assert _fragments(sender.build(0.0, 0, None, False))
    whole = wire.NackFrame((wire.NackRequest(UNRELIABLE, mid),))
    sender.on_nack(whole, 0.021)
    assert [f.data for f in _fragments(sender.build(0.021, 1, None, False))] == [b"state"]
    sender.on_nack(whole, 0.030)  # sent before the repair could have arrived: ignored
    assert sender.build(0.030, 2, None, False) is None
    sender.on_nack(whole, 0.045)  # a round trip later: the repair was lost too
    assert _fragments(sender.build(0.045, 3, None, False))
    # Unknown messages and messages without a deadline are not held.
    sender.on_nack(wire.NackFrame((wire.NackRequest(UNRELIABLE, mid + 5),)), 0.05)
    assert sender.build(0.05, 4, None, False) is None
    assert counters.nack_repairs == 2


def test_lost_reliable_piece_is_not_repaired_when_it_cannot_arrive_in_time() -> None:
    """now + srtt/2 >= deadline at loss detection: no repair, the message expires (ABANDON)."""
    sender, counters = _sender()
    mid = sender.queue_message(RELIABLE, bytes(500), deadline=0.040, now=0.0)
    assert _fragments(sender.build(0.0, 0, None, False))
    others = [sender.queue_message(RELIABLE, bytes(10), None, now=0.0) for _ in range(3)]
    for pn, _ in enumerate(others, start=1):
        sender.build(0.0, pn, None, False)
    # Packets 1..3 acknowledged at 31 ms: packet 0 is lost (3 later ones acknowledged).
    sender.on_ack(wire.AckFrame(((1, 3),), 0), 0.031)
    assert counters.repairs_too_late == 1 and counters.messages_expired == 1
    frames = wire.parse_frames(sender.build(0.031, 4, None, False) or b"")
    assert frames == [wire.AbandonFrame(RELIABLE, mid)]


def test_lost_reliable_piece_is_repaired_while_it_can_arrive_in_time() -> None:
    sender, counters = _sender()
    sender.queue_message(RELIABLE, bytes(500), deadline=0.045, now=0.0)
    assert _fragments(sender.build(0.0, 0, None, False))
    for pn in range(1, 4):
        sender.queue_message(RELIABLE, bytes(10), None, now=0.0)
        sender.build(0.0, pn, None, False)
    sender.on_ack(wire.AckFrame(((1, 3),), 0), 0.031)  # 31 + 10 < 45
    assert [f.offset for f in _fragments(sender.build(0.031, 4, None, False))] == [0]
    assert counters.repairs_too_late == 0 and counters.retransmissions == 1


def test_held_messages_are_released_at_their_deadline_and_bounded() -> None:
    sender, _ = _sender()
    for i in range(5):
        sender.queue_message(UNRELIABLE, bytes(1000), deadline=0.01 * (i + 1), now=0.0)
    sender.queue_message(UNRELIABLE, bytes(1000), deadline=None, now=0.0)  # never held
    assert sender.held_bytes == 5000
    sender.handle_timer(0.03)
    assert sender.held_bytes == 2000

    config = SessionConfig(max_message_bytes=4000, max_send_queue_bytes=4000)
    rtt = RttEstimator(0.1, 0.05, 2.0)
    small = Sender(config, Counters(), rtt, NewReno(1200, 100, 4), nack=True)
    for _ in range(10):
        small.queue_message(UNRELIABLE, bytes(1500), deadline=10.0, now=0.0)
        for pn in range(2):
            small.build(0.0, pn, None, False)
        assert small.held_bytes <= config.max_send_queue_bytes


# -- on the simulated link ----------------------------------------------------------------------


class Dropper:
    """Drops chosen DATA packets of one direction, by packet number."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.packet_numbers: set[int] = set()
        self.dropped: list[int] = []

    def __call__(self, direction: Direction, data: bytes, now: float) -> bytes | None:
        if direction == self.direction and data[0] == pk.DATA:
            pn = packet_number(data)
            if pn in self.packet_numbers:
                self.dropped.append(pn)
                return None
        return data


def _net(dropper: Dropper | None = None, **config: object) -> SimNetwork:
    net = SimNetwork(
        seed=31, config=SessionConfig(**config), c2s=LinkConfig(delay_s=DELAY_S), tap=dropper
    )
    net.connect()
    net.run_for(0.5)  # an RTT sample on both sides
    return net


@pytest.mark.parametrize("lost", [1, 3], ids=["middle", "last"])
def test_nack_repairs_a_lost_piece_before_the_deadline(lost: int) -> None:
    """A hole is asked for once the next piece shows it; a lost last piece once a later
    packet (here a message on another channel) shows it. Either way the repair arrives well
    inside the 60 ms deadline."""
    dropper = Dropper("c2s")
    net = _net(dropper)
    first = next_packet_number(net.client)
    dropper.packet_numbers.add(first + lost)  # pieces 0..3 go in packets first..first+3
    mid = net.send("client", bytes(range(256)) * 16, channel=UNRELIABLE, deadline_s=0.060)
    net.run_for(0.0001)
    net.send("client", b"later", channel=RELIABLE)
    net.run_for(0.2)

    assert dropper.dropped == [first + lost]
    [message] = net.messages("server", UNRELIABLE)
    assert message.message_id == mid and message.data == bytes(range(256)) * 16
    assert net.latencies("client", UNRELIABLE)[mid] < 0.035  # one NACK round trip
    server, client = net.session("server").stats(), net.client.stats()
    assert server.nacks_sent == 1 and client.nacks_received == 1
    assert client.nack_repairs == 1 and client.retransmissions == 1
    assert server.messages_late == 0 and server.reassembly_bytes == 0


def test_a_stalled_path_is_not_taken_for_loss() -> None:
    """The last piece comes 30 ms late and nothing arrives meanwhile (a Wi-Fi channel scan):
    without a later packet as evidence the receiver does not ask for it (RACK's rule), so
    nothing is repaired that was only on its way."""
    held: list[bytes] = []
    target = -1
    net: SimNetwork

    def stall(direction: Direction, data: bytes, now: float) -> bytes | None:
        if direction == "c2s" and data[0] == pk.DATA and packet_number(data) == target:
            held.append(data)
            net.inject("c2s", data, delay_s=DELAY_S + 0.030)
            return None
        return data

    net = SimNetwork(seed=31, c2s=LinkConfig(delay_s=DELAY_S), tap=stall)
    net.connect()
    net.run_for(0.5)
    target = next_packet_number(net.client) + 3
    mid = net.send("client", bytes(4000), channel=UNRELIABLE, deadline_s=0.060)
    net.run_for(0.2)
    assert held
    assert [m.message_id for m in net.messages("server", UNRELIABLE)] == [mid]
    assert net.session("server").stats().nacks_sent == 0
    assert net.client.stats().retransmissions == 0


def test_nack_asks_for_a_one_piece_message_of_which_nothing_arrived() -> None:
    dropper = Dropper("c2s")
    net = _net(dropper)
    dropper.packet_numbers.add(next_packet_number(net.client) + 1)
    net.send_many(
        "client",
        [bytes([i]) * 100 for i in range(4)],
        channel=UNRELIABLE,
        interval_s=0.005,
        deadline_s=0.1,
        start_s=net.now,
    )
    net.run_for(0.3)
    got = net.messages("server", UNRELIABLE)
    assert sorted(m.message_id for m in got) == [0, 1, 2, 3]
    assert [m.data for m in sorted(got, key=lambda m: m.message_id)] == [
        bytes([i]) * 100 for i in range(4)
    ]
    assert net.session("server").stats().nacks_sent == 1


def test_no_nack_when_the_repair_could_not_make_it() -> None:
    """A 25 ms deadline over a 20 ms round trip leaves no time for a repair: the receiver
    does not ask, the message is late, nothing is retransmitted."""
    dropper = Dropper("c2s")
    net = _net(dropper)
    net.run_for(1.0)  # the server's keepalive: its first RTT sample
    assert net.session("server").stats().min_rtt_ms is not None
    dropper.packet_numbers.add(next_packet_number(net.client) + 1)
    mid = net.send("client", bytes(4000), channel=UNRELIABLE, deadline_s=0.025)
    net.run_for(0.2)
    assert net.late("server") == [MessageLate(channel=UNRELIABLE, message_id=mid)]
    assert net.session("server").stats().nacks_sent == 0
    assert net.client.stats().retransmissions == 0


def test_no_recovery_frames_to_a_peer_that_did_not_negotiate_them() -> None:
    lossy = LinkConfig(delay_s=DELAY_S, loss=0.1)
    net = SimNetwork(
        seed=3, config=SessionConfig(), server_config=SessionConfig(recovery=False), c2s=lossy
    )
    server = net.connect()
    net.send_many(
        "client",
        [bytes(3000) for _ in range(200)],
        channel=UNRELIABLE,
        interval_s=0.01,
        deadline_s=0.1,
        start_s=net.now,
    )
    net.send_many(
        "server",
        [bytes(3000) for _ in range(200)],
        channel=UNRELIABLE,
        interval_s=0.01,
        deadline_s=0.1,
        start_s=net.now,
    )
    net.run_for(3.0)
    for stats in (net.client.stats(), server.stats()):
        assert stats.nacks_sent == stats.nacks_received == 0
        assert stats.fec_packets_sent == stats.fec_recovered == stats.nack_repairs == 0


def _stream(net: SimNetwork, count: int, size: int, deadline_s: float, channel: int) -> None:
    sizes = random.Random(size).choices(range(size // 2, size * 3 // 2), k=count)
    net.send_many(
        "client",
        [random.Random(i).randbytes(s) for i, s in enumerate(sizes)],
        channel=channel,
        interval_s=1 / 30,
        deadline_s=deadline_s,
        start_s=net.now + 0.01,
    )


@pytest.mark.parametrize("channel", [UNRELIABLE, LATEST])
def test_fec_rebuilds_on_a_lossy_link_and_delivers_exactly_once(channel: int) -> None:
    link = LinkConfig(delay_s=DELAY_S, loss=0.05, jitter_s=0.002, reorder=0.02, duplicate=0.02)
    config = SessionConfig(nack=False, initial_window_packets=256, min_window_packets=256)
    net = SimNetwork(seed=8, config=config, c2s=link)
    server = net.connect()
    _stream(net, 300, 6000, 0.033, channel)
    net.run_for(11.0)
    client, received = net.client.stats(), server.stats()
    assert client.fec_packets_sent > 100 and received.fec_recovered > 30
    assert client.retransmissions == 0 and received.nacks_sent == 0
    got = net.messages("server", channel)
    ids = [m.message_id for m in got]
    assert len(ids) == len(set(ids))  # never twice
    sent = {s.message_id: s.data for s in net.sent_messages("client", channel)}
    assert all(m.data == sent[m.message_id] for m in got)
    assert len(got) >= 0.93 * len(sent)
    assert received.reassembly_bytes == 0


def test_fec_across_game_messages_rebuilds_them() -> None:
    link = LinkConfig(delay_s=DELAY_S, loss=0.08)
    config = SessionConfig(nack=False)
    net = SimNetwork(seed=9, config=config, c2s=link)
    server = net.connect()
    net.send_many(
        "client",
        [random.Random(i).randbytes(200) for i in range(900)],
        channel=UNRELIABLE,
        interval_s=1 / 60,
        deadline_s=0.1,
        start_s=net.now,
    )
    net.run_for(16.0)
    got = net.messages("server", UNRELIABLE)
    assert server.stats().fec_recovered > 20
    assert len({m.message_id for m in got}) == len(got)
    assert all(m.data == random.Random(m.message_id).randbytes(200) for m in got)


def test_clean_link_sends_no_parity_and_no_nack() -> None:
    net = SimNetwork(seed=5, c2s=LinkConfig(delay_s=DELAY_S))
    server = net.connect()
    _stream(net, 150, 6000, 0.033, UNRELIABLE)
    net.send_many(
        "client",
        [bytes(200)] * 300,
        channel=LATEST,
        interval_s=1 / 60,
        deadline_s=0.05,
        start_s=net.now,
    )
    net.run_for(6.0)
    assert net.client.stats().fec_packets_sent == 0
    assert server.stats().nacks_sent == 0
    assert len(net.messages("server")) == 450


def test_both_keep_a_video_stream_on_time_at_five_percent_loss() -> None:
    """The measurement of bench/recovery.py in small: 30 fps, 33 ms deadlines, 5 % loss."""
    link = LinkConfig(delay_s=DELAY_S, loss=0.05)
    config = SessionConfig(initial_window_packets=256, min_window_packets=256)
    net = SimNetwork(seed=12, config=config, c2s=link)
    server = net.connect()
    _stream(net, 300, 7500, 0.033, UNRELIABLE)
    net.run_for(11.0)
    on_time = [t for t in net.latencies("client", UNRELIABLE).values() if t <= 0.033 + 1e-9]
    assert len(on_time) >= 0.98 * 300
    stats = net.client.stats()
    assert stats.fec_packets_sent > 0 and stats.nack_repairs > 0
    assert server.stats().fec_recovered > 0


def test_burst_loss_asks_for_more_parity() -> None:
    def parity_sent(link: LinkConfig) -> int:
        config = SessionConfig(nack=False, initial_window_packets=256, min_window_packets=256)
        net = SimNetwork(seed=14, config=config, c2s=link)
        net.connect()
        net.send_many(
            "client",
            [bytes(60_000)] * 20,
            channel=UNRELIABLE,
            interval_s=0.25,
            deadline_s=0.1,
            start_s=net.now,
        )
        net.run_for(6.0)
        return net.client.stats().fec_packets_sent

    random_loss = parity_sent(LinkConfig(delay_s=DELAY_S, loss=0.03))
    bursts = parity_sent(LinkConfig(delay_s=DELAY_S, burst=GilbertElliott.from_loss(0.03, 4.0)))
    assert bursts > random_loss > 0


def test_reliable_channel_gets_early_repair_from_nack() -> None:
    dropper = Dropper("c2s")
    config = SessionConfig(channels=(ChannelKind.RELIABLE,))
    net = SimNetwork(seed=31, config=config, c2s=LinkConfig(delay_s=DELAY_S), tap=dropper)
    net.connect()
    net.run_for(0.5)
    dropper.packet_numbers.add(next_packet_number(net.client) + 1)
    mid = net.send("client", bytes(5000), channel=RELIABLE, deadline_s=0.2)
    net.run_for(0.5)
    assert [m.message_id for m in net.messages("server")] == [mid]
    assert net.session("server").stats().nacks_sent >= 1
    # One repair only: the NACK's, not a second one from loss detection.
    assert net.client.stats().retransmissions == 1


# -- a hostile (but authenticated) peer ---------------------------------------------------------


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    frames=st.lists(
        st.one_of(
            parity_frames().map(wire.encode_parity),
            st.lists(nack_requests(), min_size=1, max_size=3).map(wire.encode_nack),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_hostile_nack_and_parity_never_raise_and_stay_bounded(frames: list[bytes]) -> None:
    """Authenticated NACK and PARITY frames with any contents: the receiver takes them, or
    closes the session for a protocol violation; it never raises, and its memory stays
    within its bounds."""
    net = SimNetwork(seed=41, c2s=LinkConfig(delay_s=DELAY_S))
    server = net.connect()
    net.send("client", bytes(5000), channel=UNRELIABLE, deadline_s=1.0)
    net.run_for(0.05)
    client = net.client
    for frame in frames:
        if len(frame) > client.config.max_datagram_bytes - pk.DATA_OVERHEAD_BYTES:
            continue
        # Sealing with the client's own packet protection is the only way to speak as an
        # authenticated peer that sends whatever it likes.
        datagram = client._protect(client._next_pn, frame)
        net.inject("c2s", datagram, delay_s=DELAY_S)
        net.run_for(0.02)
    net.run_for(2.0)
    stats = server.stats()
    assert stats.reassembly_bytes <= server.config.max_reassembly_bytes
    if server.is_established:
        net.send("client", b"still fine", channel=UNRELIABLE)
        net.run_for(0.1)
        assert b"still fine" in [m.data for m in net.messages("server", UNRELIABLE)]


def test_recovery_bench_runs_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import recovery

    out = tmp_path / "recovery.json"
    args = ["--quick", "--json", "--out", str(out), "--workload", "game", "--link", "random 5%"]
    assert recovery.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    rows = {row["mode"]: row for row in printed["rows"]}
    assert set(rows) == {"none", "arq", "fec", "both"}
    assert rows["none"]["overhead_pct"] == 0.0
    assert rows["both"]["on_time_pct"] > rows["none"]["on_time_pct"]
    assert rows["fec"]["fec_packets_sent"] > 0 and rows["arq"]["retransmissions"] > 0


def test_recovery_row_through_the_relay_process() -> None:
    """The same row over real sockets through ``python -m bench.relay`` (loopback only):
    5 % loss both ways, game messages with 100 ms deadlines, NACK and parity on."""
    from bench import recovery

    row = recovery.run_relay(recovery.WORKLOADS["game"], "random 5%", "both", 3.0)
    assert row["messages"] == 180
    assert 2.0 < row["measured_loss_pct"] < 10.0  # the relay dropped what it was told to
    assert row["on_time_pct"] >= 97.0  # about 95 % without repair
    assert row["nacks_sent"] > 0 and row["retransmissions"] > 0
