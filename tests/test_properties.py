"""Properties of the transport's decoders, engines and data structures (Hypothesis).

Decoders get garbage, truncated and oversize input (STYLE rule 8): they return or raise
``DecodeError``, nothing else. The engines never raise on input at all and account for every
datagram. Codecs round-trip; RangeSet and ReplayWindow agree with plain-set reference models;
a peer cannot push reassembly memory past its documented bound.

Settings are deterministic (``derandomize=True``) so a run is the same run every time.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from bench.simlink import (
    CLIENT_ADDR,
    SERVER_ADDR,
    Direction,
    LinkConfig,
    SimNetwork,
    packet_number,
    payload,
)
from transport import packet as pk
from transport import wire
from transport.acks import AckTracker
from transport.config import DEFAULT_CHANNELS, ChannelKind, SessionConfig
from transport.crypto import ReplayWindow
from transport.errors import DecodeError
from transport.events import Message
from transport.listener import Listener
from transport.rangeset import RangeSet
from transport.session import Session

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)
ENGINE = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SIM = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SEED = 101

VARINT_LIMITS = {1: 0x3F, 2: 0x3FFF, 4: 0x3FFF_FFFF, 8: wire.MAX_VARINT}

varints = st.one_of(
    st.integers(0, 0x3F),
    st.integers(0x40, 0x3FFF),
    st.integers(0x4000, 0x3FFF_FFFF),
    st.integers(0x4000_0000, wire.MAX_VARINT),
)


def varint_with_length(value: int, length: int) -> bytes:
    """``value`` as a varint of exactly ``length`` bytes (non-minimal encodings are legal)."""
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[length]
    return ((prefix << (8 * length - 2)) | value).to_bytes(length, "big")


@st.composite
def any_length_varints(draw: st.DrawFn, max_value: int = wire.MAX_VARINT) -> bytes:
    value = draw(st.integers(0, max_value))
    fitting = [n for n, limit in VARINT_LIMITS.items() if value <= limit]
    return varint_with_length(value, draw(st.sampled_from(fitting)))


@st.composite
def fragment_frames(draw: st.DrawFn) -> bytes:
    """FRAGMENT frame bodies (after the type byte), mostly well formed, sometimes not."""
    flags = draw(st.one_of(st.integers(0, 7), st.integers(0, 255)))
    channel = draw(st.integers(0, 255))
    total = draw(st.integers(0, 3000))
    offset = draw(st.integers(0, total))
    length = draw(st.integers(0, total - offset))
    data = draw(st.binary(min_size=length, max_size=length))
    parts = [
        bytes((flags, channel)),
        draw(any_length_varints()),
        varint_with_length(total, draw(st.sampled_from(_fits(total)))),
        varint_with_length(offset, draw(st.sampled_from(_fits(offset)))),
    ]
    if flags & wire.HAS_DEADLINE:
        parts.append(draw(any_length_varints()))
    parts.append(varint_with_length(length, draw(st.sampled_from(_fits(length)))))
    parts.append(data)
    body = b"".join(parts)
    cut = draw(st.one_of(st.just(len(body)), st.integers(0, len(body))))
    return body[:cut] + draw(st.one_of(st.just(b""), st.binary(max_size=8)))


@st.composite
def nack_frames(draw: st.DrawFn) -> bytes:
    """NACK frame bodies (after the type byte), mostly well formed, sometimes not."""
    count = draw(st.one_of(st.integers(1, 4), st.integers(0, 255)))
    parts = [bytes((count,))]
    for _ in range(min(count, 4)):
        parts.append(bytes((draw(st.integers(0, 255)),)))
        parts.append(draw(any_length_varints()))
        ranges = draw(st.one_of(st.integers(0, 4), st.integers(0, 255)))
        parts.append(bytes((ranges,)))
        for _ in range(min(ranges, 4)):
            parts.append(draw(any_length_varints(max_value=1 << 20)))
            parts.append(draw(any_length_varints(max_value=1 << 12)))
    body = b"".join(parts)
    cut = draw(st.one_of(st.just(len(body)), st.integers(0, len(body))))
    return body[:cut] + draw(st.one_of(st.just(b""), st.binary(max_size=8)))


@st.composite
def parity_frames(draw: st.DrawFn) -> bytes:
    """PARITY frame bodies (after the type byte), mostly well formed, sometimes not."""
    flags = draw(st.one_of(st.integers(0, 15), st.integers(0, 255)))
    k = draw(st.one_of(st.integers(1, 8), st.integers(0, 255)))
    m = draw(st.one_of(st.integers(1, 4), st.integers(0, 255)))
    length = draw(st.integers(0, 64))
    parts = [bytes((flags, draw(st.integers(0, 255)))), draw(any_length_varints())]
    if not flags & wire.ACROSS:
        parts.append(draw(any_length_varints(max_value=1 << 16)))  # total_len
        parts.append(draw(any_length_varints(max_value=1 << 16)))  # first_offset
    if flags & wire.HAS_DEADLINE:
        parts.append(draw(any_length_varints()))
    parts.append(bytes((k, m, draw(st.integers(0, 255)))))
    if flags & wire.ACROSS:
        for _ in range(min(k, 9) - 1):
            parts.append(draw(any_length_varints(max_value=100)))
    parts.append(varint_with_length(length, draw(st.sampled_from(_fits(length)))))
    parts.append(draw(st.binary(min_size=length, max_size=length)))
    body = b"".join(parts)
    cut = draw(st.one_of(st.just(len(body)), st.integers(0, len(body))))
    return body[:cut] + draw(st.one_of(st.just(b""), st.binary(max_size=8)))


def _fits(value: int) -> list[int]:
    return [n for n, limit in VARINT_LIMITS.items() if value <= limit]


# -- decoders: return or raise DecodeError ----------------------------------------------------

DECODERS: dict[str, Callable[[bytes], object]] = {
    "parse_frames": wire.parse_frames,
    "decode_initial": pk.decode_initial,
    "decode_retry": pk.decode_retry,
    "decode_accept": pk.decode_accept,
    "parse_extensions": pk.parse_extensions,
    "params_from_extensions": lambda b: pk.params_from_extensions(pk.parse_extensions(b)),
    "packet_type": pk.packet_type,
    "destination_cid": pk.destination_cid,
    "read_varint": lambda b: wire.read_varint(b, 0),
    "parse_fragment": lambda b: wire.parse_fragment(b, 0),
}


FRAME_SOUP = [
    wire.PING,
    wire.ACK,
    wire.CLOSE,
    wire.ABANDON,
    wire.NACK,
    wire.PARITY,
    wire.PADDING,
    0xFF,
    0x40,
    0x80,
    0xC0,
]
"""Frame types and varint length prefixes: strung together, they reach deep into the parsers."""


def _prefixed(first: int, version: int, rest: bytes) -> bytes:
    return bytes((first, version)) + rest


def _decoder_inputs() -> st.SearchStrategy[bytes]:
    """Garbage, and garbage that starts the way real input does."""
    first_bytes = st.sampled_from(
        [pk.INITIAL, pk.RETRY, pk.ACCEPT, pk.DATA, *range(wire.PADDING, wire.PARITY + 1)]
    )
    return st.one_of(
        st.binary(max_size=64),
        st.binary(min_size=1150, max_size=1500),
        st.builds(_prefixed, first_bytes, st.integers(0, 2), st.binary(max_size=1400)),
        st.builds(lambda body: bytes((wire.FRAGMENT,)) + body, fragment_frames()),
        st.builds(lambda body: bytes((wire.NACK,)) + body, nack_frames()),
        st.builds(lambda body: bytes((wire.PARITY,)) + body, parity_frames()),
        st.lists(st.sampled_from(FRAME_SOUP), max_size=40).map(bytes),
    )


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(data=_decoder_inputs())
def test_decoders_return_or_raise_decode_error(name: str, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        DECODERS[name](data)


@FAST
@given(data=st.binary(max_size=20), pos=st.integers(0, 24))
def test_read_varint_anywhere(data: bytes, pos: int) -> None:
    try:
        value, end = wire.read_varint(data, pos)
    except DecodeError:
        assert pos >= len(data) or pos + (1 << (data[pos] >> 6)) > len(data)
    else:
        assert pos < end <= len(data) and 0 <= value <= wire.MAX_VARINT


def _reference_fragment(buf: bytes, pos: int) -> wire.FragmentFields:
    """PROTOCOL.md §4's FRAGMENT read field by field with read_varint: slow and obvious."""
    if pos + 2 > len(buf):
        raise DecodeError("truncated")
    flags, channel = buf[pos], buf[pos + 1]
    message_id, p = wire.read_varint(buf, pos + 2)
    total, p = wire.read_varint(buf, p)
    offset, p = wire.read_varint(buf, p)
    lifetime = None
    if flags & wire.HAS_DEADLINE:
        lifetime, p = wire.read_varint(buf, p)
    length, p = wire.read_varint(buf, p)
    if flags & ~wire.KNOWN_FLAGS or flags & wire.KIND_MASK == wire.KIND_MASK:
        raise DecodeError("flags")
    end = p + length
    if end > len(buf) or offset + length > total or (length == 0 and total != 0):
        raise DecodeError("bounds")
    return flags & wire.KIND_MASK, channel, message_id, total, offset, lifetime, buf[p:end], end


@FAST
@given(body=fragment_frames())
def test_fragment_fast_path_parses_like_the_reference(body: bytes) -> None:
    try:
        expected: wire.FragmentFields | None = _reference_fragment(body, 0)
    except DecodeError:
        expected = None
    try:
        got: wire.FragmentFields | None = wire.parse_fragment(body, 0)
    except DecodeError:
        got = None
    assert got == expected


# -- codecs round-trip ------------------------------------------------------------------------


@FAST
@given(value=varints)
def test_varint_round_trip(value: int) -> None:
    encoded = wire.encode_varint(value)
    assert len(encoded) == wire.varint_size(value)
    assert wire.read_varint(encoded + b"\xff", 0) == (value, len(encoded))
    for length in _fits(value):
        assert wire.read_varint(varint_with_length(value, length), 0) == (value, length)


@pytest.mark.parametrize("value", [wire.MAX_VARINT + 1, 1 << 64])
def test_varint_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError):
        wire.encode_varint(value)


@st.composite
def ack_ranges(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Disjoint, non-adjacent inclusive ranges, highest first: what an ACK can say."""
    hi = draw(varints)
    ranges: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(1, wire.MAX_ACK_RANGES))):
        lo = hi - draw(st.one_of(st.integers(0, 3), varints))
        if lo < 0:
            break
        ranges.append((lo, hi))
        hi = lo - 2 - draw(st.one_of(st.integers(0, 3), varints))
        if hi < 0:
            break
    if not ranges:
        ranges.append((0, 0))
    return ranges


@FAST
@given(ranges=ack_ranges(), delay=st.one_of(st.integers(0, 100_000), varints))
def test_ack_round_trip(ranges: list[tuple[int, int]], delay: int) -> None:
    [frame] = wire.parse_frames(wire.encode_ack(ranges, delay))
    assert frame == wire.AckFrame(tuple(ranges), delay)
    assert frame.largest == ranges[0][1]


def test_ack_with_too_many_ranges_does_not_decode() -> None:
    ranges = [(i * 3, i * 3) for i in range(wire.MAX_ACK_RANGES + 1)][::-1]
    with pytest.raises(DecodeError):
        wire.parse_frames(wire.encode_ack(ranges, 0))


@FAST
@given(
    kind=st.sampled_from([0, 1, 2]),
    channel=st.integers(0, 255),
    message_id=varints,
    total=st.integers(0, 1 << 24),
    data=st.binary(max_size=1200),
    lifetime=st.one_of(st.none(), st.integers(0, (1 << 30) - 1)),
    at=st.integers(0, 1 << 24),
)
def test_fragment_round_trip(
    kind: int,
    channel: int,
    message_id: int,
    total: int,
    data: bytes,
    lifetime: int | None,
    at: int,
) -> None:
    total = max(total, len(data)) if data else total
    offset = min(at, total - len(data))
    header = wire.fragment_header(kind, channel, message_id, total, offset, lifetime, len(data))
    assert len(header) <= wire.fragment_header_max_size(message_id, total)
    if not data and total:
        return  # an empty piece of a non-empty message is not a frame
    [frame] = wire.parse_frames(header + data)
    assert frame == wire.FragmentFrame(kind, channel, message_id, total, offset, lifetime, data)
    if lifetime is None:
        prefix = wire.fragment_prefix(kind, channel, message_id, total)
        assert prefix + wire.fragment_tail(offset, len(data)) == header


@FAST
@given(
    code=varints,
    reason=st.text(max_size=300),
    room=st.integers(32, 400),
    channel=st.integers(0, 255),
    message_id=varints,
)
def test_close_and_abandon_round_trip(
    code: int, reason: str, room: int, channel: int, message_id: int
) -> None:
    frame_bytes = wire.encode_close(code, reason, room)
    assert len(frame_bytes) <= room
    [close] = wire.parse_frames(frame_bytes)
    assert isinstance(close, wire.CloseFrame) and close.code == code
    assert reason.startswith(close.reason)
    assert len(close.reason.encode()) <= wire.MAX_REASON_BYTES
    [abandon] = wire.parse_frames(wire.encode_abandon(channel, message_id))
    assert abandon == wire.AbandonFrame(channel, message_id)


@given(
    first=st.tuples(*[st.integers(0, 1 << 40)] * 4),
    steps=st.lists(
        st.tuples(
            st.integers(-(1 << 20), 1 << 20),
            st.integers(0, 1 << 30),
            st.integers(0, 1 << 20),
            st.integers(0, 1 << 30),
        ),
        max_size=wire.MAX_ARRIVALS - 1,
    ),
)
def test_arrivals_round_trip(
    first: tuple[int, int, int, int], steps: list[tuple[int, int, int, int]]
) -> None:
    records = [(first[0] + (1 << 20) * len(steps), *first[1:])]  # no packet number below 0
    for step in steps:
        records.append(
            (
                records[-1][0] + step[0],
                records[-1][1] + step[1],
                records[-1][2] + step[2],
                records[-1][3] + step[3],
            )
        )
    [frame] = wire.parse_frames(wire.encode_arrivals(records))
    assert frame == wire.ArrivalsFrame(tuple(records))


def test_arrivals_limits_are_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        wire.encode_arrivals([])
    with pytest.raises(ValueError):
        wire.encode_arrivals([(5, 1, 1, 1), (6, 0, 2, 2)])  # time went back
    with pytest.raises(ValueError):
        wire.encode_arrivals([(5, 0, 1, 1), (6, 1, 0, 2)])  # a total fell
    too_many = [(pn, pn, pn, pn) for pn in range(wire.MAX_ARRIVALS + 1)]
    with pytest.raises(ValueError):
        wire.encode_arrivals(too_many)
    for bad in (
        b"\x06",
        b"\x06\x00",
        bytes((6, wire.MAX_ARRIVALS + 1, 0, 0)),
        b"\x06\x02\x01\x01\x00\x00",
    ):
        with pytest.raises(DecodeError):
            wire.parse_frames(bad)


def test_params_features_byte_is_optional_and_masked() -> None:
    v1 = pk.Params(15000, 5000, 1200).encode()[3:13]  # the first edition's 10 bytes
    assert pk.params_from_extensions({pk.EXT_PARAMS: v1}).features == 0
    params = pk.params_from_extensions({pk.EXT_PARAMS: v1 + b"\xff\x99"})
    assert params.features == pk.KNOWN_PARAM_FEATURES


@FAST
@given(
    cid=st.binary(min_size=8, max_size=8),
    public=st.binary(min_size=32, max_size=32),
    token=st.binary(max_size=pk.MAX_TOKEN_BYTES),
    extensions=st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=8, unique_by=lambda t: t[0]
    ),
)
def test_handshake_packets_round_trip(
    cid: bytes, public: bytes, token: bytes, extensions: list[tuple[int, bytes]]
) -> None:
    ext = b"".join(bytes((t,)) + len(v).to_bytes(2, "big") + v for t, v in extensions)
    initial = pk.Initial(cid, public, token, ext)
    encoded = pk.encode_initial(initial)
    assert len(encoded) >= pk.MIN_INITIAL_BYTES
    assert pk.decode_initial(encoded) == initial
    assert pk.parse_extensions(ext) == dict(extensions)
    if token:
        assert pk.decode_retry(pk.encode_retry(pk.Retry(cid, token))) == pk.Retry(cid, token)


# -- reference models -------------------------------------------------------------------------


def _model_ranges(values: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] + 1 == v:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


@FAST
@given(
    max_ranges=st.one_of(st.none(), st.integers(1, 4)),
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 60), st.integers(0, 6)), min_size=1, max_size=60
    ),
    probes=st.lists(st.tuples(st.integers(-2, 70), st.integers(0, 8)), max_size=20),
)
def test_rangeset_matches_a_set_model(
    max_ranges: int | None,
    ops: list[tuple[bool, int, int]],
    probes: list[tuple[int, int]],
) -> None:
    rs = RangeSet(max_ranges=max_ranges)
    model: set[int] = set()
    for use_add_new, lo, width in ops:
        hi = lo + width
        fresh = not set(range(lo, hi + 1)) <= model
        if use_add_new:
            assert rs.add_new(lo, hi) == fresh
        else:
            rs.add(lo, hi)
        model |= set(range(lo, hi + 1))
        ranges = _model_ranges(model)
        if max_ranges is not None and len(ranges) > max_ranges:
            ranges = ranges[-max_ranges:]  # the lowest are forgotten
            model = {v for lo_, hi_ in ranges for v in range(lo_, hi_ + 1)}
        assert rs.ascending() == ranges
        assert len(rs) == len(ranges) and bool(rs) == bool(ranges)
        assert rs.highest == (ranges[-1][1] if ranges else None)
    for limit in (0, 1, 3, 100):
        assert rs.descending(limit) == _model_ranges(model)[::-1][:limit]
    for lo, width in probes:
        assert (lo in rs) == (lo in model)
        assert rs.covers(lo, lo + width) == any(
            a <= lo and lo + width <= b for a, b in _model_ranges(model)
        )


@FAST
@given(
    size=st.sampled_from([64, 100, 4096]),
    steps=st.lists(
        st.one_of(st.integers(-80, 3), st.integers(-5000, 5000), st.integers(0, 1 << 20)),
        min_size=1,
        max_size=200,
    ),
)
def test_replay_window_matches_a_set_model(size: int, steps: list[int]) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    base = 0
    for step in steps:
        pn = max(0, base + step)
        expected = pn > highest or (highest - pn < size and pn not in seen)
        assert window.is_fresh(pn) == expected, (pn, highest)
        if expected:  # as the session does: mark only what was fresh (and authenticated)
            window.mark(pn)
            seen.add(pn)
            highest = max(highest, pn)
        base = max(base, pn)


@FAST
@given(
    pns=st.lists(st.integers(0, 300), min_size=1, max_size=80, unique=True),
    eliciting=st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_ack_tracker_acknowledges_exactly_what_arrived(
    pns: list[int], eliciting: list[bool]
) -> None:
    tracker = AckTracker(0.005, 2)
    for i, pn in enumerate(pns):
        tracker.on_packet(pn, eliciting[i], now=i * 0.001)
    assert tracker.has_unacked == any(eliciting[: len(pns)])
    [frame] = wire.parse_frames(tracker.frame(now=1.0))
    assert isinstance(frame, wire.AckFrame)
    newest = _model_ranges(set(pns))[::-1][:32]  # the tracker keeps the 32 newest ranges
    assert list(frame.ranges) == newest
    assert not tracker.has_unacked and not tracker.due(1.0)


@FAST
@given(
    runs=st.lists(
        st.tuples(st.integers(0, 200), st.integers(1, 6), st.booleans()), min_size=1, max_size=30
    )
)
def test_ack_tracker_run_is_the_same_as_packet_by_packet(
    runs: list[tuple[int, int, bool]],
) -> None:
    """``on_eliciting_run`` (the bulk receiver's) leaves the tracker as per-packet calls do."""
    one, batched = AckTracker(0.005, 3), AckTracker(0.005, 3)
    seen: set[int] = set()
    for i, (first, length, probe) in enumerate(runs):
        pns = [pn for pn in range(first, first + length) if pn not in seen]
        if not pns or pns != list(range(pns[0], pns[-1] + 1)):
            continue  # the session only batches fresh, consecutive numbers
        seen.update(pns)
        now = i * 0.001
        for pn in pns:
            one.on_packet(pn, True, now)
        batched.on_eliciting_run(pns[0], pns[-1], now)
        assert (one.has_unacked, one.due(now), one.next_timer(), one.next_in_order) == (
            batched.has_unacked,
            batched.due(now),
            batched.next_timer(),
            batched.next_in_order,
        )
        if probe:  # an ACK goes out now and then, resetting both
            assert one.frame(now + 0.0005) == batched.frame(now + 0.0005)
    assert one.frame(1.0) == batched.frame(1.0)


# -- engines never raise, and count what they drop --------------------------------------------


@functools.cache
def _cids() -> tuple[bytes, bytes]:
    """The client's and the server's connection IDs under SEED (the same in every run)."""
    net = _established()
    return net.client.local_cid, net.session("server").local_cid


def _established() -> SimNetwork:
    net = SimNetwork(seed=SEED, c2s=LinkConfig(delay_s=0.01))
    net.connect()
    return net


def _garbage() -> st.SearchStrategy[bytes]:
    def shaped(kind: str, rest: bytes) -> bytes:
        client_cid, server_cid = _cids()
        if kind == "data-server":
            return bytes((pk.DATA,)) + server_cid + rest
        if kind == "data-client":
            return bytes((pk.DATA,)) + client_cid + rest
        if kind == "initial":
            return bytes((pk.INITIAL, pk.VERSION)) + rest + bytes(max(0, 1200 - len(rest)))
        if kind == "retry":
            return bytes((pk.RETRY, pk.VERSION)) + client_cid + rest
        return bytes((pk.ACCEPT, pk.VERSION)) + client_cid + rest

    kinds = st.sampled_from(["data-server", "data-client", "initial", "retry", "accept"])
    return st.one_of(
        st.binary(max_size=1500),
        st.builds(shaped, kinds, st.binary(max_size=1300)),
    )


def _accounted(net: SimNetwork) -> int:
    """Every way an engine can account for a datagram it was given."""
    total = 0
    counters = net.listener.counters
    total += counters.decode_failures + counters.retries_sent + counters.refused
    for session in (net.client, *net.listener.sessions):
        s = session.stats()
        total += s.decode_failures + s.replays_rejected + s.packets_received
    return total


def _is_initial(data: bytes) -> bool:
    try:
        pk.decode_initial(data)
    except DecodeError:
        return False
    return True


@ENGINE
@given(datagrams=st.lists(_garbage(), min_size=1, max_size=8))
def test_engines_never_raise_and_count_garbage(datagrams: list[bytes]) -> None:
    net = _established()
    engines: list[tuple[Session | Listener, tuple[str, int]]] = [
        (net.listener, CLIENT_ADDR),
        (net.client, SERVER_ADDR),
    ]
    for data in datagrams:
        for engine, addr in engines:
            before = _accounted(net)
            engine.receive_datagram(data, addr, net.now)
            assert _accounted(net) > before or _is_initial(data)
    # Still a working session both ways.
    net.send("client", b"ping")
    net.send("server", b"pong")
    net.run_for(0.1)
    assert [m.data for m in net.messages("server")] == [b"ping"]
    assert [m.data for m in net.messages("client")] == [b"pong"]


@ENGINE
@given(datagrams=st.lists(_garbage(), min_size=1, max_size=8))
def test_engines_never_raise_in_any_state(datagrams: list[bytes]) -> None:
    connecting = Session.client(SessionConfig(), SERVER_ADDR, 0.0, random.Random(SEED).randbytes)
    fresh_listener = Listener(SessionConfig(), 0.0, random.Random(SEED).randbytes)
    closing = _established()
    closing.client.close(closing.now, "bye")
    closing.run_for(0.001)
    terminated = _established()
    terminated.client.close(terminated.now, "bye")
    terminated.run_for(1.0)
    assert terminated.client.is_terminated
    engines: list[tuple[Session | Listener, float]] = [
        (connecting, 0.01),
        (fresh_listener, 0.01),
        (closing.client, closing.now),
        (closing.listener, closing.now),
        (terminated.client, terminated.now),
        (terminated.listener, terminated.now),
    ]
    for engine, now in engines:
        for data in datagrams:
            addr = CLIENT_ADDR if isinstance(engine, Listener) else SERVER_ADDR
            engine.receive_datagram(data, addr, now)
        engine.datagrams_to_send(now)
        timer = engine.next_timer()
        if timer is not None:
            engine.handle_timer(max(now, timer))
        while engine.next_event() is not None:
            pass


@functools.cache
def _captured() -> tuple[tuple[Direction, bytes], ...]:
    """DATA datagrams of a short exchange under SEED, as they left each engine."""
    net = _exchange()
    return tuple((c.direction, c.data) for c in net.captured if c.data[0] == pk.DATA)


def _exchange(capture: bool = True) -> SimNetwork:
    net = SimNetwork(seed=SEED, c2s=LinkConfig(delay_s=0.01), capture=capture)
    net.connect()
    net.send_many("client", [payload(i, 700 * i) for i in range(4)])
    net.send_many("server", [payload(i, 50) for i in range(4)])
    net.run_until_quiet()
    return net


@st.composite
def mutations(draw: st.DrawFn) -> tuple[Direction, bytes]:
    captured = _captured()
    direction, data = captured[draw(st.integers(0, len(captured) - 1))]
    buf = bytearray(data)
    how = draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        del buf[draw(st.integers(0, len(buf) - 1)) :]
    elif how == "extend":
        buf += draw(st.binary(min_size=1, max_size=64))
    else:
        at = draw(st.integers(0, len(buf)))
        buf[at:at] = draw(st.binary(min_size=1, max_size=16))
    return direction, bytes(buf)


@ENGINE
@given(mutated=st.lists(mutations(), min_size=1, max_size=6))
def test_mutated_real_datagrams_are_dropped_and_the_session_carries_on(
    mutated: list[tuple[Direction, bytes]],
) -> None:
    net = _exchange(capture=False)  # the same session the datagrams came from
    for direction, data in mutated:
        before = _accounted(net)
        net.inject(direction, data)
        net.run_for(0.0)
        assert _accounted(net) == before + 1  # dropped and counted, exactly once
    for side in ("client", "server"):
        assert net.session(side).stats().packets_received > 0
    net.send("client", b"after")
    net.send("server", b"after")
    net.run_for(0.2)
    assert net.messages("server")[-1].data == b"after"
    assert net.messages("client")[-1].data == b"after"
    assert len(net.messages("server")) == 5 and len(net.messages("client")) == 5


# -- memory bound -----------------------------------------------------------------------------

BOUNDED = SessionConfig(
    channels=(*DEFAULT_CHANNELS, ChannelKind.RELIABLE),  # two reliable channels
    max_message_bytes=32 * 1024,
    max_reassembly_bytes=64 * 1024,
)


class DropEvery:
    """Drops every ``period``-th client DATA datagram (from ``phase``): a fragment of almost
    every multi-fragment message, and the repairs now and then."""

    def __init__(self, period: int, phase: int) -> None:
        self.period = period
        self.phase = phase

    def __call__(self, direction: Direction, data: bytes, now: float) -> bytes | None:
        dropped = direction == "c2s" and data[0] == pk.DATA
        if dropped and packet_number(data) % self.period == self.phase:
            return None
        return data


@SIM
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3]),
            st.one_of(
                st.integers(1, 3000),
                st.integers(BOUNDED.max_message_bytes // 4, BOUNDED.max_message_bytes),
            ),
        ),
        min_size=3,
        max_size=12,
    ),
    period=st.integers(3, 9),
    phase=st.integers(0, 8),
    loss=st.sampled_from([0.0, 0.1]),
)
def test_peer_cannot_push_reassembly_past_its_bound(
    messages: list[tuple[int, int]], period: int, phase: int, loss: float
) -> None:
    bound = BOUNDED.max_reassembly_bytes + BOUNDED.max_message_bytes  # reassembly.py's bound
    net = SimNetwork(
        seed=SEED,
        config=BOUNDED,
        c2s=LinkConfig(delay_s=0.01, loss=loss),
        s2c=LinkConfig(delay_s=0.01),
        tap=DropEvery(period, phase % period),
    )
    server = net.connect()
    peak = 0

    def watch(n: SimNetwork) -> None:
        nonlocal peak
        peak = max(peak, server.stats().reassembly_bytes)

    net.observers.append(watch)
    for i, (channel, size) in enumerate(messages):
        net.send("client", payload(i, size), channel=channel)
    reliable = [c for c, _ in messages if BOUNDED.channels[c] == ChannelKind.RELIABLE]
    want = {c: reliable.count(c) for c in (0, 3)}
    net.run_until(
        lambda: (
            all(len(net.messages("server", c)) == n for c, n in want.items())
            and net.client.stats().send_queue_bytes == 0
        ),
        timeout_s=60,
    )
    net.run_for(BOUNDED.reassembly_timeout_s + 0.1)  # whatever partial is left times out

    target(peak / bound, label="peak reassembly / bound")  # search for the worst case
    assert peak <= bound
    assert server.stats().reassembly_bytes == 0
    # Reliable channels got everything, in order, under the pressure; the rest is intact.
    for message in net.messages("server"):
        assert isinstance(message, Message)
        index = _sent_index(net, message.channel, message.message_id)
        assert message.data == payload(index, len(message.data))
    for channel in (0, 3):
        ids = [m.message_id for m in net.messages("server", channel)]
        assert ids == list(range(want[channel]))


def _sent_index(net: SimNetwork, channel: int, message_id: int) -> int:
    for index, sent in enumerate(net.sent):
        if sent.channel == channel and sent.message_id == message_id:
            return index
    raise AssertionError(f"no message {message_id} was sent on channel {channel}")


def test_unreliable_pressure_evicts_oldest_partials_within_the_bound() -> None:
    net = SimNetwork(seed=SEED, config=BOUNDED, c2s=LinkConfig(delay_s=0.01), tap=DropEvery(3, 1))
    server = net.connect()
    peak = 0

    def watch(n: SimNetwork) -> None:
        nonlocal peak
        peak = max(peak, server.stats().reassembly_bytes)

    net.observers.append(watch)
    net.send_many("client", [payload(i, 20_000) for i in range(30)], channel=1, interval_s=0.002)
    net.run_for(1.0)

    assert peak <= BOUNDED.max_reassembly_bytes  # no reliable headroom in play
    assert peak > BOUNDED.max_reassembly_bytes - 20_000  # it really was under pressure
    assert server.stats().messages_dropped > 0  # partials evicted to make room
    net.run_until(lambda: net.client.stats().send_queue_bytes == 0, timeout_s=30)
    net.run_for(BOUNDED.reassembly_timeout_s + 0.1)
    assert server.stats().reassembly_bytes == 0  # what was left timed out
