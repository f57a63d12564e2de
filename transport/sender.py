"""The sending half of the channels: fragmentation, packet filling, loss recovery, deadlines.

A message is cut into pieces lazily: it keeps a cursor to its next unsent piece, so queueing
a 16 MB message costs no more than queueing 16 bytes. Packets are filled with an ACK (when one
is owed), reliable control frames, repairs, then new pieces taken round-robin across channels,
so one channel's backlog cannot hold up another's. Every ack-eliciting packet is remembered
until it is acknowledged or declared lost (RFC 9002 §6: 3 packets or 9/8 RTT later; or the
RFC 6298 retransmission timer); pieces of lost packets are queued again if their message is
reliable and its deadline has not passed.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections import deque

from transport.config import ChannelKind, SessionConfig
from transport.congestion import CongestionController
from transport.errors import UsageError
from transport.estimator import LossTracker
from transport.packet import DATA_OVERHEAD_BYTES
from transport.rtt import RttEstimator
from transport.stats import Counters
from transport.wire import (
    HAS_DEADLINE,
    PING_BYTES,
    AckFrame,
    encode_abandon,
    fragment_header,
    fragment_header_max_size,
    fragment_prefix,
    fragment_tail,
)

PACKET_THRESHOLD = 3  # RFC 9002 §6.1.1
_RECENT_LOSSES = 1024  # declared losses remembered for spotting spurious ones
MAX_LIFETIME_US = (1 << 30) - 1  # a 4-byte varint at most: keeps header sizes predictable

_RELIABLE = ChannelKind.RELIABLE
_LATEST = ChannelKind.LATEST

# Message states.
_PENDING = 0
_DONE = 1
_EXPIRED = 2
_SUPERSEDED = 3


class _OutMessage:
    """A message being sent: its bytes, how they are cut, and what has been acknowledged."""

    __slots__ = (
        "acked",
        "channel",
        "chunk",
        "data",
        "deadline",
        "kind",
        "message_id",
        "next_piece",
        "pieces",
        "prefix",
        "state",
        "unacked",
        "view",
    )

    def __init__(
        self,
        channel: int,
        kind: int,
        message_id: int,
        data: bytes,
        deadline: float | None,
        chunk: int,
    ) -> None:
        self.channel = channel
        self.kind = kind
        self.message_id = message_id
        self.data = data
        self.view = memoryview(data)
        self.deadline = deadline
        self.state = _PENDING
        self.chunk = chunk
        self.pieces = max(1, -(-len(data) // chunk))  # an empty message is one empty piece
        self.next_piece = 0  # the first piece never sent yet
        # Reliable only: one byte per piece, set once that piece is acknowledged.
        self.acked = bytearray(self.pieces) if kind == _RELIABLE else None
        self.unacked = self.pieces if kind == _RELIABLE else 0
        # Every piece's header starts alike; built once.
        flags = kind if deadline is None else kind | HAS_DEADLINE
        self.prefix = fragment_prefix(flags, channel, message_id, len(data))


Piece = tuple[_OutMessage, int]
"""A reliable message and the index of one of its pieces: what a packet must deliver."""


def _lifetime_us(message: _OutMessage, now: float) -> int | None:
    """What is left of the message's deadline, as a FRAGMENT carries it."""
    if message.deadline is None:
        return None
    return min(int((message.deadline - now) * 1e6), MAX_LIFETIME_US)


class _Control:
    """A control frame that is repeated until acknowledged (ABANDON)."""

    __slots__ = ("acked", "frame")

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.acked = False


class _SentPacket:
    __slots__ = ("controls", "pieces", "sent_at", "size")

    def __init__(
        self, sent_at: float, size: int, pieces: list[Piece], controls: list[_Control] | None
    ) -> None:
        self.sent_at = sent_at
        self.size = size
        self.pieces = pieces  # reliable pieces only: unreliable ones are never repaired
        self.controls = controls


_NO_PIECES: list[Piece] = []


class Sender:
    """Send-side state of one session (sans-I/O; the session seals what this builds)."""

    def __init__(
        self,
        config: SessionConfig,
        counters: Counters,
        rtt: RttEstimator,
        congestion: CongestionController,
        peer_max_ack_delay_s: float = 0.025,
    ) -> None:
        self._config = config
        self._peer_max_ack_delay_s = peer_max_ack_delay_s
        self._counters = counters
        self._rtt = rtt
        self._cc = congestion
        self._max_datagram = config.max_datagram_bytes
        self._max_payload = config.max_datagram_bytes - DATA_OVERHEAD_BYTES
        self._next_id = [0] * len(config.channels)
        self._queues: dict[int, deque[_OutMessage]] = {}
        self._active: deque[int] = deque()  # channels with unsent pieces, round-robin
        self._latest: dict[int, _OutMessage] = {}
        self._repairs: deque[Piece] = deque()
        self._controls: deque[_Control] = deque()
        self._sent: dict[int, _SentPacket] = {}
        self._ping = False
        self._largest_acked = -1
        self._loss_time: float | None = None
        self._rto_base: float | None = None  # when the RFC 6298 timer was last (re)started
        self._backoff = 0
        self.bytes_in_flight = 0
        self.queued_bytes = 0
        self.acked_bytes = 0
        """Running total of the sizes of our packets the peer acknowledged."""
        self.acked_packets = 0
        self.loss = LossTracker()
        """Recent and total loss of our ack-eliciting packets, and the mean burst length."""
        # Fates decided but not yet told to ``loss``, which needs them in packet-number order:
        # a loss is declared only after later packets were acknowledged. A heap of runs
        # (first pn, last pn, delivered), released below the oldest packet still in flight.
        self._fates: list[tuple[int, int, bool]] = []
        self._released_below = 0  # every fate below this packet number went to ``loss``
        # Packets declared lost lately (pn -> when), to spot the ones that were only
        # reordered when their acknowledgement comes after all (RFC 9002 §6.1: spurious).
        self._recent_losses: list[tuple[int, float]] = []  # sorted by pn
        self._spurious: set[int] = set()  # declared lost, then acknowledged, not yet released
        self.spurious_losses = 0
        self.last_eliciting_at = float("-inf")
        """When the last ack-eliciting packet was built (keepalives count from it)."""

    # -- queueing ----------------------------------------------------------------------------

    def queue_message(self, channel: int, data: bytes, deadline: float | None) -> int:
        """Queue ``data`` for ``channel``; return its message id."""
        config = self._config
        if not 0 <= channel < len(config.channels):
            raise UsageError(f"no channel {channel} (configured: {len(config.channels)})")
        size = len(data)
        if size > config.max_message_bytes:
            raise UsageError(f"message of {size} bytes exceeds max_message_bytes")
        if self.queued_bytes + size > config.max_send_queue_bytes:
            raise UsageError("send queue full (max_send_queue_bytes); wait for it to drain")
        kind = config.channels[channel]
        mid = self._next_id[channel]
        self._next_id[channel] = mid + 1
        chunk = self._max_payload - fragment_header_max_size(mid, size)
        message = _OutMessage(channel, kind, mid, data, deadline, chunk)
        if kind == _LATEST:
            # Supersede the previous message only if none of it has left yet. One that is
            # part-way out is let finish: cutting each message short with the next would,
            # when messages come faster than the window carries them, deliver nothing.
            older = self._latest.get(channel)
            if older is not None and older.state == _PENDING and older.next_piece == 0:
                older.state = _SUPERSEDED  # the queue skips it
                self._counters.messages_superseded += 1
                self.queued_bytes -= len(older.data)
            self._latest[channel] = message
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = deque()
        if not queue:
            self._active.append(channel)
        queue.append(message)
        self.queued_bytes += size
        self._counters.messages_sent += 1
        return mid

    def can_send_direct(self) -> bool:
        """True when a new message may skip the queues: nothing waits and the window is open."""
        return not (
            self._active
            or self._repairs
            or self._controls
            or self._ping
            or self.bytes_in_flight + self._max_datagram > self._cc.window_bytes
        )

    def send_direct(
        self,
        channel: int,
        data: bytes,
        deadline: float | None,
        now: float,
        pn: int,
        ack: bytes | None,
    ) -> tuple[int, bytes] | None:
        """Put a message that fits one packet straight into packet ``pn``; return its id and
        the payload, or None (then queue it). Call only when :meth:`can_send_direct`.

        The fast path of a realtime sender: one message per tick, nothing queued. It is the
        same packet the queues would build, without the objects an unreliable message does
        not need.
        """
        config = self._config
        size = len(data)
        if not 0 <= channel < len(config.channels) or size > config.max_message_bytes:
            return None  # queue_message raises the UsageError
        kind = config.channels[channel]
        mid = self._next_id[channel]
        lifetime_us = None
        if deadline is not None:
            lifetime_us = min(int((deadline - now) * 1e6), MAX_LIFETIME_US)
        header = fragment_header(kind, channel, mid, size, 0, lifetime_us, size)
        used = len(header) + size + (len(ack) if ack is not None else 0)
        if used > self._max_payload:
            return None
        pieces = _NO_PIECES
        if kind == _RELIABLE:
            if self.queued_bytes + size > config.max_send_queue_bytes:
                return None
            message = _OutMessage(channel, kind, mid, data, deadline, size or 1)
            message.next_piece = 1
            pieces = [(message, 0)]
            self.queued_bytes += size
        self._next_id[channel] = mid + 1
        self._counters.messages_sent += 1
        payload = header + data if ack is None else b"".join((ack, header, data))
        self._record(pn, now, used + DATA_OVERHEAD_BYTES, pieces, None)
        return mid, payload

    @property
    def window_bytes(self) -> int:
        """The congestion window in force."""
        return self._cc.window_bytes

    @property
    def target_bps(self) -> float | None:
        """The controller's target media bitrate, if it has one."""
        target: float | None = getattr(self._cc, "target_bps", None)
        return target

    def queue_ping(self) -> None:
        self._ping = True

    @property
    def has_data(self) -> bool:
        return bool(self._active or self._repairs or self._controls or self._ping)

    @property
    def reliable_outstanding(self) -> bool:
        """True while something reliable waits to be sent or acknowledged."""
        return bool(self.queued_bytes or self._controls or self._repairs)

    # -- building packets --------------------------------------------------------------------

    def build(self, now: float, pn: int, ack: bytes | None, ack_due: bool) -> bytes | None:
        """Plaintext payload of packet ``pn``, or None when there is nothing to send now."""
        if (
            ack is None
            and len(self._active) == 1
            and not (self._ping or self._controls or self._repairs)
        ):
            payload = self._build_full_piece(now, pn)
            if payload is not None:
                return payload
        space = self._max_payload
        parts: list[bytes | memoryview] = []
        pieces: list[Piece] = []
        controls: list[_Control] | None = None
        if ack is not None:
            parts.append(ack)
            space -= len(ack)
        eliciting = False
        if self._ping:
            self._ping = False
            parts.append(PING_BYTES)
            space -= 1
            eliciting = True
        if self.bytes_in_flight + self._max_datagram <= self._cc.window_bytes:
            if self._controls:
                controls = []
                space = self._fill_controls(parts, controls, space)
            if self._repairs:
                space = self._fill_repairs(parts, pieces, space, now)
            active = self._active
            queues = self._queues
            while active and space > 16:
                queue = queues[active[0]]
                before = space
                space = self._fill_new(queue, parts, pieces, space, now)
                if queue:
                    if space == before:
                        break  # the head piece does not fit in what is left
                    active.rotate(-1)
                else:
                    active.popleft()
        if len(parts) > (ack is not None) + eliciting:
            eliciting = True  # pieces or controls went in
        elif not eliciting and not (ack is not None and ack_due):
            return None
        payload = b"".join(parts)
        if eliciting:
            self._record(pn, now, len(payload) + DATA_OVERHEAD_BYTES, pieces, controls or None)
        return payload

    def _build_full_piece(self, now: float, pn: int) -> bytes | None:
        """The bulk lane: a packet that is one full-size piece of the message at the head of
        the only busy channel (what the general filler would build, with less bookkeeping).
        None when the case does not apply."""
        queue = self._queues[self._active[0]]
        message = queue[0]
        index = message.next_piece
        if (
            message.state != _PENDING
            or (message.deadline is not None and message.deadline <= now)  # general: expire
            or index + 1 >= message.pieces  # the last piece may be short: general path
            or self.bytes_in_flight + self._max_datagram > self._cc.window_bytes
        ):
            return None
        chunk = message.chunk
        offset = index * chunk
        tail = fragment_tail(offset, chunk, _lifetime_us(message, now))
        payload = message.prefix + tail + message.view[offset : offset + chunk]
        message.next_piece = index + 1
        pieces = [(message, index)] if message.kind == _RELIABLE else _NO_PIECES
        self._record(pn, now, len(payload) + DATA_OVERHEAD_BYTES, pieces, None)
        return payload

    def _record(
        self,
        pn: int,
        now: float,
        size: int,
        pieces: list[Piece],
        controls: list[_Control] | None,
    ) -> None:
        """Remember an ack-eliciting packet until it is acknowledged or lost."""
        self._sent[pn] = _SentPacket(now, size, pieces, controls)
        self.bytes_in_flight += size
        self.last_eliciting_at = now
        if self._rto_base is None:
            self._rto_base = now  # RFC 6298 §5.1

    def _fill_controls(
        self, parts: list[bytes | memoryview], controls: list[_Control], space: int
    ) -> int:
        queue = self._controls
        while queue and len(queue[0].frame) <= space:
            control = queue.popleft()
            if control.acked:
                continue
            parts.append(control.frame)
            controls.append(control)
            space -= len(control.frame)
        return space

    def _piece(
        self, message: _OutMessage, index: int, now: float, space: int
    ) -> tuple[bytes, int, int] | None:
        """Header, offset and length of piece ``index``, or None if it does not fit."""
        offset = index * message.chunk
        length = min(message.chunk, len(message.data) - offset)
        header = message.prefix + fragment_tail(offset, length, _lifetime_us(message, now))
        if len(header) + length > space:
            return None
        return header, offset, length

    def _fill_new(
        self,
        queue: deque[_OutMessage],
        parts: list[bytes | memoryview],
        pieces: list[Piece],
        space: int,
        now: float,
    ) -> int:
        """Move the next unsent piece of this channel into the packet, if it fits; return the
        space left. One piece per call: the caller goes round the channels."""
        while queue:
            message = queue[0]
            if message.state != _PENDING:
                queue.popleft()
                continue
            if message.deadline is not None and message.deadline <= now:
                queue.popleft()
                self._expire(message)
                continue
            index = message.next_piece
            piece = self._piece(message, index, now, space)
            if piece is None:
                return space
            header, offset, length = piece
            data = message.data
            parts.append(header)
            if length == len(data):
                parts.append(data)
            else:
                parts.append(message.view[offset : offset + length])
            message.next_piece = index + 1
            if message.kind == _RELIABLE:
                pieces.append((message, index))
            if index + 1 == message.pieces:
                queue.popleft()
                if message.kind != _RELIABLE:
                    message.state = _DONE  # all of it left; nothing to wait for
                    self.queued_bytes -= len(data)
            return space - len(header) - length
        return space

    def _fill_repairs(
        self, parts: list[bytes | memoryview], pieces: list[Piece], space: int, now: float
    ) -> int:
        """Move repairs into the packet while they fit."""
        repairs = self._repairs
        while repairs:
            message, index = repairs[0]
            if message.state != _PENDING or message.acked[index]:  # type: ignore[index]
                repairs.popleft()
                continue
            if message.deadline is not None and message.deadline <= now:
                repairs.popleft()
                self._expire(message)
                continue
            piece = self._piece(message, index, now, space)
            if piece is None:
                return space
            repairs.popleft()
            header, offset, length = piece
            parts.append(header)
            parts.append(message.view[offset : offset + length])
            pieces.append((message, index))
            self._counters.retransmissions += 1
            space -= len(header) + length
        return space

    # -- acknowledgements and loss -----------------------------------------------------------

    def on_ack(self, ack: AckFrame, now: float) -> None:
        largest = ack.largest
        ranges = ack.ranges[::-1]  # ascending
        r = 0
        lo, hi = ranges[0]
        acked: list[tuple[int, _SentPacket]] = []
        sent = self._sent
        for pn, packet in sent.items():
            if pn > largest:
                break
            while pn > hi and r + 1 < len(ranges):
                r += 1
                lo, hi = ranges[r]
            if lo <= pn <= hi:
                acked.append((pn, packet))
        if self._recent_losses:
            self._find_spurious(ack, now)
        if not acked:
            return
        acked_bytes = 0
        fates = self._fates
        run_first = run_last = acked[0][0]
        for pn, packet in acked:
            if pn > run_last + 1:
                heapq.heappush(fates, (run_first, run_last, True))
                run_first = pn
            run_last = pn
            del sent[pn]
            acked_bytes += packet.size
            for message, index in packet.pieces:
                flags = message.acked
                assert flags is not None
                if flags[index]:
                    continue
                flags[index] = 1
                message.unacked -= 1
                if message.unacked == 0 and message.state == _PENDING:
                    message.state = _DONE
                    self.queued_bytes -= len(message.data)
            if packet.controls:
                for control in packet.controls:
                    control.acked = True
        self.bytes_in_flight -= acked_bytes
        self.acked_bytes += acked_bytes
        self.acked_packets += len(acked)
        last_pn, last_packet = acked[-1]
        # One call per ACK frame, not per packet; the newest packet's send time decides
        # whether the acknowledged data was sent after a recovery period began.
        self._cc.on_acked(acked_bytes, last_packet.sent_at, now)
        if last_pn == largest:
            # RFC 9002 §5.3: the delay a peer claims is capped by what it announced.
            ack_delay = min(ack.ack_delay_us / 1e6, self._peer_max_ack_delay_s)
            self._rtt.update(now - last_packet.sent_at, ack_delay)
        if largest > self._largest_acked:
            self._largest_acked = largest
        self._backoff = 0
        self._rto_base = now if sent else None  # RFC 6298 §5.2/§5.3
        heapq.heappush(fates, (run_first, run_last, True))
        self._detect_lost(now)
        self._release_fates(now)

    def _release_fates(self, now: float) -> None:
        """Tell ``loss`` every fate below the oldest packet still in flight, in order."""
        fates = self._fates
        floor = next(iter(self._sent), None)
        on_outcomes = self.loss.on_outcomes
        spurious = self._spurious
        while fates and (floor is None or fates[0][1] < floor):
            first, last, delivered = heapq.heappop(fates)
            if spurious and not delivered and first in spurious:
                spurious.discard(first)
                delivered = True
            on_outcomes(last, last - first + 1, delivered, now)
            self._released_below = last + 1

    def _find_spurious(self, ack: AckFrame, now: float) -> None:
        """Packets declared lost that this ACK names were reordered, not lost: correct the
        loss estimate (their repairs, if any, have gone; nothing else is undone)."""
        recent = self._recent_losses
        horizon = now - max(4 * self._rtt.srtt_s, 0.2)
        if recent[0][1] < horizon:
            recent[:] = [entry for entry in recent if entry[1] >= horizon]
        for lo, hi in ack.ranges:  # at most 32 ranges, each a bisection of the recent list
            start = bisect_left(recent, (lo, -1.0))
            end = bisect_right(recent, (hi, now + 1.0))
            if start == end:
                continue
            for pn, _ in recent[start:end]:
                self.spurious_losses += 1
                if pn < self._released_below:
                    self.loss.on_spurious()
                else:
                    self._spurious.add(pn)
            del recent[start:end]
            if not recent:
                return

    def _detect_lost(self, now: float) -> None:
        """RFC 9002 §6.1: packet and time thresholds below the largest acknowledged."""
        largest = self._largest_acked
        loss_delay = self._rtt.loss_delay_s()
        lost: list[int] = []
        self._loss_time = None
        for pn, packet in self._sent.items():
            if pn >= largest:
                break
            # The same expression as the timer's: ``now - loss_delay`` could round the other
            # way and leave the timer due forever.
            if largest - pn >= PACKET_THRESHOLD or packet.sent_at + loss_delay <= now:
                lost.append(pn)
            else:
                self._loss_time = packet.sent_at + loss_delay
                break
        for pn in lost:
            self._lose(pn, now)

    def _lose(self, pn: int, now: float) -> None:
        packet = self._sent.pop(pn)
        heapq.heappush(self._fates, (pn, pn, False))
        recent = self._recent_losses
        if len(recent) >= _RECENT_LOSSES:
            del recent[0]
        if not recent or pn > recent[-1][0]:
            recent.append((pn, now))
        else:
            insort(recent, (pn, now))
        self.bytes_in_flight -= packet.size
        self._counters.packets_lost += 1
        self._cc.on_lost(packet.size, packet.sent_at, now)
        if packet.controls:
            self._controls.extend(c for c in packet.controls if not c.acked)
        for message, index in packet.pieces:
            if message.state != _PENDING or message.acked[index]:  # type: ignore[index]
                continue
            if message.deadline is not None and message.deadline <= now:
                self._expire(message)
            else:
                self._repairs.append((message, index))

    def _expire(self, message: _OutMessage) -> None:
        if message.state != _PENDING:
            return
        message.state = _EXPIRED
        self._counters.messages_expired += 1
        self.queued_bytes -= len(message.data)
        if message.kind == _RELIABLE:
            self._controls.append(_Control(encode_abandon(message.channel, message.message_id)))

    def next_timer(self) -> float | None:
        rto_at = None
        if self._rto_base is not None:
            rto_at = self._rto_base + self._rtt.rto_s(self._backoff)
        if self._loss_time is None:
            return rto_at
        if rto_at is None:
            return self._loss_time
        return min(rto_at, self._loss_time)

    def handle_timer(self, now: float) -> None:
        if self._loss_time is not None and self._loss_time <= now:
            self._detect_lost(now)
        if self._rto_base is not None and now >= self._rto_base + self._rtt.rto_s(self._backoff):
            self._on_rto(now)
        self._release_fates(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.6: resend, back off, restart the timer."""
        for pn in list(self._sent):
            self._lose(pn, now)
        self._cc.on_timeout(now)
        self._backoff += 1
        self._loss_time = None
        if not (self._repairs or self._controls):
            self._ping = True  # nothing to repair: probe so the timer can learn the path
        self._rto_base = now
