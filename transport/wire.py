"""Frames inside an encrypted packet: variable-length integers and the frame codec.

The layout is normative in ``docs/PROTOCOL.md`` §4; keep the two in step. Decoders raise
:class:`DecodeError` and nothing else, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transport.errors import DecodeError

# Frame types (PROTOCOL.md §4).
PADDING = 0x00
PING = 0x01
ACK = 0x02
CLOSE = 0x03
FRAGMENT = 0x04
ABANDON = 0x05
ARRIVALS = 0x06
NACK = 0x07
PARITY = 0x08

# FRAGMENT flag bits.
KIND_MASK = 0x03
HAS_DEADLINE = 0x04
KNOWN_FLAGS = KIND_MASK | HAS_DEADLINE

MAX_VARINT = (1 << 62) - 1
MAX_ACK_RANGES = 256
MAX_REASON_BYTES = 1024
MAX_ARRIVALS = 64
"""Arrival records in one ARRIVALS frame (and what a receiver keeps waiting to be sent)."""
MAX_NACK_MESSAGES = 32
"""Messages named in one NACK frame."""
MAX_NACK_RANGES = 16
"""Byte ranges named for one message in a NACK frame."""
MAX_PARITY_SHARDS = 255
"""Upper bound on ``k + m`` of a PARITY group (Reed-Solomon over GF(2^8), ``fec.MAX_SHARDS``)."""

# PARITY flag bits: the channel kind and HAS_DEADLINE as in FRAGMENT, plus ACROSS.
ACROSS = 0x08
"""PARITY flag: the group is whole one-piece messages, not pieces of one message."""
PARITY_FLAGS = KIND_MASK | HAS_DEADLINE | ACROSS


def encode_varint(value: int) -> bytes:
    """QUIC's variable-length integer (RFC 9000 §16): 1, 2, 4 or 8 bytes, length in 2 bits."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"varint out of range: {value}")


def varint_size(value: int) -> int:
    """Bytes :func:`encode_varint` uses for ``value``."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    return 8


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return ``(value, next_pos)``."""
    try:
        first = buf[pos]
    except IndexError:
        raise DecodeError("truncated varint") from None
    length = 1 << (first >> 6)
    if length == 1:
        return first, pos + 1
    end = pos + length
    if end > len(buf):
        raise DecodeError("truncated varint")
    value = int.from_bytes(buf[pos:end], "big") & ((1 << (8 * length - 2)) - 1)
    return value, end


@dataclass(frozen=True, slots=True)
class PingFrame:
    """Asks for an acknowledgement; keeps the session alive."""


@dataclass(frozen=True, slots=True)
class AckFrame:
    """Packet numbers received, as inclusive ranges, highest first.

    ``ack_delay_us`` is how long the receiver held the largest one before acknowledging it
    (subtracted from the RTT sample, as in RFC 9002 §5.3).
    """

    ranges: tuple[tuple[int, int], ...]
    ack_delay_us: int

    @property
    def largest(self) -> int:
        return self.ranges[0][1]


@dataclass(frozen=True, slots=True)
class CloseFrame:
    code: int
    reason: str


@dataclass(slots=True)
class FragmentFrame:
    """A piece of one message: bytes ``[offset, offset + len(data))`` of ``total_len``.

    Not frozen on purpose: one is built per received packet, and a frozen dataclass's
    ``__init__`` costs three times as much. Treat it as read-only.
    """

    kind: int
    channel: int
    message_id: int
    total_len: int
    offset: int
    lifetime_us: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class AbandonFrame:
    """The sender stopped repairing ``message_id`` on ``channel`` (its deadline passed)."""

    channel: int
    message_id: int


Arrival = tuple[int, int, int, int]
"""One ARRIVALS record: packet number, arrival time (µs, receiver's clock), and the packets and
bytes the receiver had received in all up to and including that packet."""


@dataclass(frozen=True, slots=True)
class ArrivalsFrame:
    """When some packets arrived, by the receiver's clock (PROTOCOL.md §4.8): records in
    arrival order (times never decrease; packet numbers may, when packets were reordered).

    The times are on the receiver's own clock with an arbitrary origin: the sender uses only
    differences between them (one-way delay variation, receive spacing), never their value.
    The running totals let the sender count what arrived between any two records it has, even
    when an ARRIVALS frame between them was lost.
    """

    packets: tuple[Arrival, ...]


@dataclass(frozen=True, slots=True)
class NackRequest:
    """Byte ranges ``(offset, length)`` of one message the receiver is missing, ascending and
    disjoint; empty ``ranges`` names the whole message (none of it arrived)."""

    channel: int
    message_id: int
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class NackFrame:
    """The receiver asks for pieces of messages whose deadline still leaves time
    (PROTOCOL.md §4.9)."""

    requests: tuple[NackRequest, ...]


@dataclass(frozen=True, slots=True)
class ParityFrame:
    """Parity shard ``index`` (of ``m``) of a group of ``k`` data shards (PROTOCOL.md §4.10).

    Within one message (``across`` false): the data shards are the pieces of
    ``message_id`` at offsets ``first_offset + j * len(data)`` for ``j < k``, the last one
    zero-padded. Across messages (``across`` true): the data shards are the one-piece messages
    ``members`` (``k`` ids, the first is ``message_id``), each as ``varint(length) || data``
    zero-padded to ``len(data)``; ``total_len`` and ``first_offset`` are 0.
    """

    kind: int
    channel: int
    message_id: int
    across: bool
    total_len: int
    first_offset: int
    lifetime_us: int | None
    k: int
    m: int
    index: int
    members: tuple[int, ...]
    data: bytes


Frame = (
    PingFrame
    | AckFrame
    | CloseFrame
    | FragmentFrame
    | AbandonFrame
    | ArrivalsFrame
    | NackFrame
    | ParityFrame
)

PING_BYTES = bytes((PING,))


def encode_ack(ranges: list[tuple[int, int]], ack_delay_us: int) -> bytes:
    """ACK frame from inclusive ranges sorted highest first (RFC 9000 §19.3 layout)."""
    first_lo, first_hi = ranges[0]
    parts = [
        bytes((ACK,)),
        encode_varint(first_hi),
        encode_varint(min(ack_delay_us, MAX_VARINT)),
        encode_varint(len(ranges) - 1),
        encode_varint(first_hi - first_lo),
    ]
    prev_lo = first_lo
    for lo, hi in ranges[1:]:
        parts.append(encode_varint(prev_lo - hi - 2))
        parts.append(encode_varint(hi - lo))
        prev_lo = lo
    return b"".join(parts)


def encode_close(code: int, reason: str, max_bytes: int = MAX_REASON_BYTES + 16) -> bytes:
    """CLOSE frame; the reason is cut (on a character boundary) so the frame fits
    ``max_bytes`` and the reason at most MAX_REASON_BYTES."""
    head = bytes((CLOSE,)) + encode_varint(code)
    room = min(MAX_REASON_BYTES, max_bytes - len(head) - 2)
    raw = reason.encode("utf-8")
    if len(raw) > room:
        raw = raw[: max(0, room)].decode("utf-8", errors="ignore").encode("utf-8")
    return b"".join((head, encode_varint(len(raw)), raw))


def encode_abandon(channel: int, message_id: int) -> bytes:
    return b"".join((bytes((ABANDON, channel)), encode_varint(message_id)))


_SMALL_VARINTS = tuple(encode_varint(i) for i in range(4096))


def _zigzag(value: int) -> int:
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def _unzigzag(value: int) -> int:
    return -((value + 1) >> 1) if value & 1 else value >> 1


def encode_arrivals(records: list[Arrival]) -> bytes:
    """ARRIVALS frame from 1..MAX_ARRIVALS records in arrival order: the first record whole,
    then each next one as steps from the one before (the packet-number step zigzag-coded, as
    a reordered packet arrives after higher-numbered ones)."""
    count = len(records)
    if not 0 < count <= MAX_ARRIVALS:
        raise ValueError(f"ARRIVALS carries 1..{MAX_ARRIVALS} records, not {count}")
    pn, us, packets, size = records[0]
    parts = [bytes((ARRIVALS, count))]
    parts += map(encode_varint, records[0])
    for record in records[1:]:
        next_pn, next_us, next_packets, next_size = record
        if next_us < us or next_packets < packets or next_size < size:
            raise ValueError("ARRIVALS records must be in arrival order (times, totals)")
        parts.append(encode_varint(_zigzag(next_pn - pn)))
        parts.append(encode_varint(next_us - us))
        parts.append(encode_varint(next_packets - packets))
        parts.append(encode_varint(next_size - size))
        pn, us, packets, size = record
    return b"".join(parts)


def encode_nack(requests: list[NackRequest]) -> bytes:
    """NACK frame naming 1..MAX_NACK_MESSAGES messages, each with 0..MAX_NACK_RANGES byte
    ranges (ascending, disjoint, non-empty; none: the whole message)."""
    if not 0 < len(requests) <= MAX_NACK_MESSAGES:
        raise ValueError(f"NACK names 1..{MAX_NACK_MESSAGES} messages, not {len(requests)}")
    parts = [bytes((NACK, len(requests)))]
    for request in requests:
        ranges = request.ranges
        if len(ranges) > MAX_NACK_RANGES:
            raise ValueError(f"NACK names at most {MAX_NACK_RANGES} ranges per message")
        parts.append(bytes((request.channel,)))
        parts.append(encode_varint(request.message_id))
        parts.append(bytes((len(ranges),)))
        end = 0
        for offset, length in ranges:
            if length < 1 or offset < end:
                raise ValueError("NACK ranges must be non-empty, ascending and disjoint")
            parts.append(encode_varint(offset))
            parts.append(encode_varint(length))
            end = offset + length
    return b"".join(parts)


def parity_header(
    kind: int,
    channel: int,
    message_id: int,
    *,
    across: bool,
    total_len: int,
    first_offset: int,
    lifetime_us: int | None,
    k: int,
    m: int,
    index: int,
    members: tuple[int, ...],
    length: int,
) -> bytes:
    """Everything of a PARITY frame before its ``length`` shard bytes (§4.10). ``members``
    (across groups only) are the ``k`` message ids, ascending, the first ``message_id``."""
    if not (k >= 1 and m >= 1 and 0 <= index < m and k + m <= MAX_PARITY_SHARDS and length):
        raise ValueError("PARITY needs k >= 1, 0 <= index < m, k + m <= 255, a shard")
    flags = kind | (HAS_DEADLINE if lifetime_us is not None else 0) | (ACROSS if across else 0)
    parts = [bytes((PARITY, flags, channel)), encode_varint(message_id)]
    if not across:
        parts.append(encode_varint(total_len))
        parts.append(encode_varint(first_offset))
    if lifetime_us is not None:
        parts.append(encode_varint(lifetime_us))
    parts.append(bytes((k, m, index)))
    if across:
        if len(members) != k or members[0] != message_id:
            raise ValueError("an across PARITY lists its k members, the first message_id")
        previous = message_id
        for member in members[1:]:
            if member <= previous:
                raise ValueError("PARITY members must increase")
            parts.append(encode_varint(member - previous))
            previous = member
    parts.append(encode_varint(length))
    return b"".join(parts)


def encode_parity(frame: ParityFrame) -> bytes:
    """The PARITY frame ``frame`` describes."""
    header = parity_header(
        frame.kind,
        frame.channel,
        frame.message_id,
        across=frame.across,
        total_len=frame.total_len,
        first_offset=frame.first_offset,
        lifetime_us=frame.lifetime_us,
        k=frame.k,
        m=frame.m,
        index=frame.index,
        members=frame.members,
        length=len(frame.data),
    )
    return header + frame.data


def fragment_header(
    kind: int,
    channel: int,
    message_id: int,
    total_len: int,
    offset: int,
    lifetime_us: int | None,
    data_len: int,
) -> bytes:
    """Everything of a FRAGMENT frame before its data."""
    flags = kind if lifetime_us is None else kind | HAS_DEADLINE
    return fragment_prefix(flags, channel, message_id, total_len) + fragment_tail(
        offset, data_len, lifetime_us
    )


def fragment_prefix(flags: int, channel: int, message_id: int, total_len: int) -> bytes:
    """The part of a FRAGMENT header that all pieces of a message share (``flags`` is the
    kind, with HAS_DEADLINE when the pieces carry a lifetime)."""
    return b"".join(
        (bytes((FRAGMENT, flags, channel)), encode_varint(message_id), encode_varint(total_len))
    )


def fragment_tail(offset: int, data_len: int, lifetime_us: int | None = None) -> bytes:
    """The rest of a FRAGMENT header after :func:`fragment_prefix`: offset, the lifetime when
    the prefix has HAS_DEADLINE, and length."""
    small = _SMALL_VARINTS
    head = small[offset] if offset < 4096 else encode_varint(offset)
    length = small[data_len] if data_len < 4096 else encode_varint(data_len)
    if lifetime_us is None:
        return head + length
    return head + encode_varint(lifetime_us) + length


def fragment_header_max_size(message_id: int, total_len: int) -> int:
    """Upper bound of :func:`fragment_header`'s size for this message (deadline included)."""
    return 3 + varint_size(message_id) + 2 * varint_size(total_len) + 8 + varint_size(total_len)


def _parse_ping(buf: bytes, pos: int) -> tuple[Frame, int]:
    return PingFrame(), pos


def _parse_ack(buf: bytes, pos: int) -> tuple[Frame, int]:
    largest, pos = read_varint(buf, pos)
    delay, pos = read_varint(buf, pos)
    try:
        count = buf[pos]
        first = buf[pos + 1]
    except IndexError:
        raise DecodeError("truncated ACK") from None
    if count < 0x40 and first < 0x40:  # the usual case: few ranges, short first range
        pos += 2
    else:
        count, pos = read_varint(buf, pos)
        first, pos = read_varint(buf, pos)
    if count >= MAX_ACK_RANGES:
        raise DecodeError("too many ACK ranges")
    lo = largest - first
    if lo < 0:
        raise DecodeError("ACK range below zero")
    ranges = [(lo, largest)]
    for _ in range(count):
        gap, pos = read_varint(buf, pos)
        length, pos = read_varint(buf, pos)
        hi = lo - gap - 2
        lo = hi - length
        if lo < 0:
            raise DecodeError("ACK range below zero")
        ranges.append((lo, hi))
    return AckFrame(tuple(ranges), delay), pos


def _parse_close(buf: bytes, pos: int) -> tuple[Frame, int]:
    code, pos = read_varint(buf, pos)
    length, pos = read_varint(buf, pos)
    if length > MAX_REASON_BYTES or pos + length > len(buf):
        raise DecodeError("bad CLOSE reason length")
    reason = buf[pos : pos + length].decode("utf-8", errors="replace")
    return CloseFrame(code, reason), pos + length


FragmentFields = tuple[int, int, int, int, int, int | None, bytes, int]
"""kind, channel, message_id, total_len, offset, lifetime_us, data, end position."""


def parse_fragment(buf: bytes, pos: int) -> FragmentFields:
    """Parse the FRAGMENT frame whose type byte precedes ``pos``, into plain fields (the
    receiver's hot path builds no object for it)."""
    try:
        flags = buf[pos]
        channel = buf[pos + 1]
        pos += 2
        message_id = buf[pos]
        if message_id < 0x40:  # one-byte varints inline: a call costs more than the read
            pos += 1
        else:
            message_id, pos = read_varint(buf, pos)
        total_len, pos = read_varint(buf, pos)
    except IndexError:
        raise DecodeError("truncated FRAGMENT") from None
    if flags & ~KNOWN_FLAGS or flags & KIND_MASK == KIND_MASK:
        raise DecodeError("unknown FRAGMENT flags")
    offset, lifetime_us, length, pos = parse_piece_tail(buf, pos, flags & HAS_DEADLINE)
    end = pos + length
    if end > len(buf):
        raise DecodeError("truncated FRAGMENT data")
    if offset + length > total_len or (length == 0 and total_len != 0):
        raise DecodeError("FRAGMENT outside its message")
    return flags & KIND_MASK, channel, message_id, total_len, offset, lifetime_us, buf[pos:end], end


def parse_piece_tail(buf: bytes, pos: int, has_deadline: int) -> tuple[int, int | None, int, int]:
    """The part of a FRAGMENT after its total length: offset, lifetime (when the deadline
    flag is set), data length, and the position of the data.

    Every received piece goes through here, so the common varint sizes are read inline."""
    try:
        offset = buf[pos]
        if offset < 0x40:
            pos += 1
        elif offset < 0x80:
            offset = ((offset & 0x3F) << 8) | buf[pos + 1]
            pos += 2
        elif offset < 0xC0 and pos + 4 <= len(buf):  # offsets past 16 KiB: big messages
            offset = int.from_bytes(buf[pos : pos + 4], "big") & 0x3FFF_FFFF
            pos += 4
        else:
            offset, pos = read_varint(buf, pos)
        lifetime_us = None
        if has_deadline:
            lifetime_us, pos = read_varint(buf, pos)
        length = buf[pos]
        if length < 0x40:
            pos += 1
        elif length < 0x80:
            length = ((length & 0x3F) << 8) | buf[pos + 1]
            pos += 2
        else:
            length, pos = read_varint(buf, pos)
    except IndexError:
        raise DecodeError("truncated FRAGMENT") from None
    return offset, lifetime_us, length, pos


def _parse_fragment(buf: bytes, pos: int) -> tuple[Frame, int]:
    kind, channel, mid, total, offset, lifetime_us, data, end = parse_fragment(buf, pos)
    return FragmentFrame(kind, channel, mid, total, offset, lifetime_us, data), end


def _parse_abandon(buf: bytes, pos: int) -> tuple[Frame, int]:
    if pos >= len(buf):
        raise DecodeError("truncated ABANDON")
    channel = buf[pos]
    message_id, pos = read_varint(buf, pos + 1)
    return AbandonFrame(channel, message_id), pos


def _parse_arrivals(buf: bytes, pos: int) -> tuple[Frame, int]:
    if pos >= len(buf):
        raise DecodeError("truncated ARRIVALS")
    count = buf[pos]
    if not 0 < count <= MAX_ARRIVALS:
        raise DecodeError("bad ARRIVALS count")
    pn, pos = read_varint(buf, pos + 1)
    us, pos = read_varint(buf, pos)
    packets, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    records = [(pn, us, packets, size)]
    for _ in range(count - 1):
        pn_step, pos = read_varint(buf, pos)
        us_step, pos = read_varint(buf, pos)
        packets_step, pos = read_varint(buf, pos)
        size_step, pos = read_varint(buf, pos)
        pn += _unzigzag(pn_step)
        us += us_step
        packets += packets_step
        size += size_step
        if not 0 <= pn <= MAX_VARINT or max(us, packets, size) > MAX_VARINT:
            raise DecodeError("ARRIVALS record out of range")
        records.append((pn, us, packets, size))
    return ArrivalsFrame(tuple(records)), pos


def _byte(buf: bytes, pos: int, what: str) -> int:
    if pos >= len(buf):
        raise DecodeError(f"truncated {what}")
    return buf[pos]


def _parse_nack(buf: bytes, pos: int) -> tuple[Frame, int]:
    count = _byte(buf, pos, "NACK")
    if not 0 < count <= MAX_NACK_MESSAGES:
        raise DecodeError("bad NACK count")
    pos += 1
    requests = []
    for _ in range(count):
        channel = _byte(buf, pos, "NACK")
        message_id, pos = read_varint(buf, pos + 1)
        range_count = _byte(buf, pos, "NACK")
        if range_count > MAX_NACK_RANGES:
            raise DecodeError("too many NACK ranges")
        pos += 1
        ranges = []
        end = 0
        for _ in range(range_count):
            offset, pos = read_varint(buf, pos)
            length, pos = read_varint(buf, pos)
            if length == 0 or offset < end:
                raise DecodeError("NACK ranges must be non-empty, ascending and disjoint")
            end = offset + length
            if end > MAX_VARINT:
                raise DecodeError("NACK range out of range")
            ranges.append((offset, length))
        requests.append(NackRequest(channel, message_id, tuple(ranges)))
    return NackFrame(tuple(requests)), pos


def _parse_parity(buf: bytes, pos: int) -> tuple[Frame, int]:
    flags = _byte(buf, pos, "PARITY")
    channel = _byte(buf, pos + 1, "PARITY")
    if flags & ~PARITY_FLAGS or flags & KIND_MASK == KIND_MASK:
        raise DecodeError("unknown PARITY flags")
    message_id, pos = read_varint(buf, pos + 2)
    across = bool(flags & ACROSS)
    total_len = first_offset = 0
    if not across:
        total_len, pos = read_varint(buf, pos)
        first_offset, pos = read_varint(buf, pos)
    lifetime_us = None
    if flags & HAS_DEADLINE:
        lifetime_us, pos = read_varint(buf, pos)
    if pos + 3 > len(buf):
        raise DecodeError("truncated PARITY")
    k, m, index = buf[pos], buf[pos + 1], buf[pos + 2]
    pos += 3
    if k == 0 or m == 0 or index >= m or k + m > MAX_PARITY_SHARDS:
        raise DecodeError("bad PARITY group")
    members: tuple[int, ...] = ()
    if across:
        ids = [message_id]
        for _ in range(k - 1):
            step, pos = read_varint(buf, pos)
            if step == 0:
                raise DecodeError("PARITY members must increase")
            ids.append(ids[-1] + step)
        if ids[-1] > MAX_VARINT:
            raise DecodeError("PARITY member out of range")
        members = tuple(ids)
    length, pos = read_varint(buf, pos)
    end = pos + length
    if length == 0 or end > len(buf):
        raise DecodeError("bad PARITY length")
    if not across and first_offset + (k - 1) * length >= total_len:
        raise DecodeError("PARITY group outside its message")
    frame = ParityFrame(
        flags & KIND_MASK,
        channel,
        message_id,
        across,
        total_len,
        first_offset,
        lifetime_us,
        k,
        m,
        index,
        members,
        buf[pos:end],
    )
    return frame, end


_PARSERS: dict[int, Callable[[bytes, int], tuple[Frame, int]]] = {
    PING: _parse_ping,
    ACK: _parse_ack,
    CLOSE: _parse_close,
    FRAGMENT: _parse_fragment,
    ABANDON: _parse_abandon,
    ARRIVALS: _parse_arrivals,
    NACK: _parse_nack,
    PARITY: _parse_parity,
}


def parse_frames(payload: bytes) -> list[Frame]:
    """Decode a decrypted packet payload into frames; PADDING is skipped."""
    frames: list[Frame] = []
    pos = 0
    end = len(payload)
    while pos < end:
        ftype = payload[pos]
        if ftype == FRAGMENT:
            frame, pos = _parse_fragment(payload, pos + 1)
        elif ftype == PADDING:
            pos += 1
            continue
        else:
            parser = _PARSERS.get(ftype)
            if parser is None:
                raise DecodeError(f"unknown frame type 0x{ftype:02x}")
            frame, pos = parser(payload, pos + 1)
        frames.append(frame)
    return frames
