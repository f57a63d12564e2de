"""The receiver's bulk lane (Reassembler.take_lane) against the full parse it stands in for."""

from __future__ import annotations

import random
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from transport.config import ChannelKind, SessionConfig
from transport.events import Event, Message
from transport.reassembly import ACCEPTED, Reassembler
from transport.stats import Counters
from transport.wire import FRAGMENT, fragment_header, parse_fragment

CHUNK = 1000


def _pieces(kind: int, channel: int, mid: int, data: bytes, lifetime_us: int | None) -> list[bytes]:
    out = []
    for offset in range(0, len(data), CHUNK):
        piece = data[offset : offset + CHUNK]
        header = fragment_header(kind, channel, mid, len(data), offset, lifetime_us, len(piece))
        out.append(header + piece)
    return out


def _feed(reassembler: Reassembler, payload: bytes) -> None:
    """What the session does: the lane first, else the full parse."""
    if reassembler.take_lane(payload):
        return
    assert payload[0] == FRAGMENT
    kind, channel, mid, total, offset, lifetime, data, end = parse_fragment(payload, 1)
    assert end == len(payload)
    status = reassembler.on_piece(kind, channel, mid, total, offset, lifetime, data, 0.0)
    assert status == ACCEPTED


def _messages(events: deque[Event]) -> list[tuple[int, int, bytes]]:
    return [(e.channel, e.message_id, e.data) for e in events if isinstance(e, Message)]


def test_interleaved_shuffled_and_duplicated_pieces_reassemble_exactly() -> None:
    rng = random.Random(5)
    events: deque[Event] = deque()
    reassembler = Reassembler(SessionConfig(), Counters(), events)
    reliable, unreliable = int(ChannelKind.RELIABLE), int(ChannelKind.UNRELIABLE)
    a = rng.randbytes(25_500)
    b = rng.randbytes(7_300)
    c = rng.randbytes(40_000)
    stream_a = _pieces(reliable, 0, 0, a, None)
    stream_b = _pieces(unreliable, 1, 0, b, 900_000)  # with a deadline: the other header form
    stream_c = _pieces(reliable, 0, 1, c, None)
    payloads = stream_a[:10] + stream_b[:3] + stream_a[10:] + stream_b[3:]
    shuffled = stream_c[:]
    rng.shuffle(shuffled)
    payloads += shuffled + stream_c[:5]  # duplicates after completion are ignored
    payloads.insert(4, stream_a[2])  # a duplicate inside the lane
    for payload in payloads:
        _feed(reassembler, payload)
    assert sorted(_messages(events)) == [(0, 0, a), (0, 1, c), (1, 0, b)]
    assert reassembler.held_bytes == 0


def test_lane_refuses_what_the_full_parse_must_judge() -> None:
    events: deque[Event] = deque()
    reassembler = Reassembler(SessionConfig(), Counters(), events)
    data = bytes(range(256)) * 20
    pieces = _pieces(int(ChannelKind.RELIABLE), 0, 0, data, None)
    _feed(reassembler, pieces[0])
    # Same header prefix, but a piece reaching past the message, a truncated one, and one
    # with trailing bytes: the lane leaves all of them to the full parse.
    past_end = fragment_header(0, 0, 0, len(data), len(data) - 10, None, 20) + bytes(20)
    assert not reassembler.take_lane(past_end)
    assert not reassembler.take_lane(pieces[1][:-1])
    assert not reassembler.take_lane(pieces[1] + b"\x00")
    for payload in pieces[1:]:
        assert reassembler.take_lane(payload)
    assert _messages(events) == [(0, 0, data)]
    assert not reassembler.take_lane(pieces[1])  # the message is complete: no lane left


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 199), st.integers(0, 40)), max_size=40))
def test_partial_coverage_matches_a_set_model(pieces: list[tuple[int, int]]) -> None:
    from transport.reassembly import Partial

    total = 200
    partial = Partial(0, 0, total, None)
    seen: set[int] = set()
    for lo, span in pieces:
        hi = min(total - 1, lo + span)
        new = set(range(lo, hi + 1)) - seen
        assert partial.cover(lo, hi) == bool(new)
        seen |= new
        prefix = 0
        while prefix in seen:
            prefix += 1
        assert partial.contig == prefix  # the contiguous prefix, exactly
        assert all(partial.covered.covers(b, b) for b in seen if b >= prefix)
