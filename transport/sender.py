"""The sending half of the channels: fragmentation, packet filling, loss recovery, deadlines.

A message is cut into pieces lazily: it keeps a cursor to its next unsent piece, so queueing
a 16 MB message costs no more than queueing 16 bytes. Packets are filled with an ACK (when one
is owed), reliable control frames, repairs, then new pieces taken round-robin across channels,
so one channel's backlog cannot hold up another's. Every ack-eliciting packet is remembered
until it is acknowledged or declared lost (RFC 9002 §6: 3 packets or 9/8 RTT later; or the
RFC 6298 retransmission timer); pieces of lost packets are queued again if their message is
reliable and a repair sent now can still arrive before its deadline (``now + srtt/2``).

With recovery negotiated (PROTOCOL.md §8.10), messages with a deadline are also kept until
it passes, so that the pieces a NACK names can be repaired whatever the channel, and groups of
pieces get PARITY frames (FEC) when the measured loss asks for them (:mod:`transport.parity`).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections import deque

from transport import fec
from transport.config import ChannelKind, SessionConfig
from transport.congestion import CongestionController, LinkSignals
from transport.errors import UsageError
from transport.estimator import LossTracker
from transport.pacer import Pacer
from transport.packet import DATA_OVERHEAD_BYTES
from transport.parity import (
    MAX_ACROSS_MEMBERS,
    AcrossGroup,
    ParityBudget,
    across_header_max,
    group_ends,
    pad,
    parity_count,
    residual_target,
)
from transport.rtt import RttEstimator
from transport.stats import Counters
from transport.wire import (
    HAS_DEADLINE,
    PING_BYTES,
    AckFrame,
    NackFrame,
    encode_abandon,
    fragment_header,
    fragment_header_max_size,
    fragment_prefix,
    fragment_tail,
    parity_header,
)

PACKET_THRESHOLD = 3  # RFC 9002 §6.1.1
_RECENT_LOSSES = 1024  # declared losses remembered for spotting spurious ones
MAX_LIFETIME_US = (1 << 30) - 1  # a 4-byte varint at most: keeps header sizes predictable

URGENT_SHARE = 0.25
"""A message with a deadline is paced out within this share of the time it has left (after
half a round trip of flight): the rest stays for its parity and a NACK repair (bench.recovery:
0.25 delivers 99.4 % of 33 ms video frames on time at 5 % loss, 0.5 only 96.7 %)."""
MIN_URGENT_S = 0.001
_URGENT_ENTRIES = 64  # more waiting hurries than this merge into one (bounded memory)

LOSS_REFRESH_S = 0.05
"""How often the loss level that decides parity is read from the loss tracker."""

_RELIABLE = ChannelKind.RELIABLE
_LATEST = ChannelKind.LATEST


class _Urgency:
    """The pace that deadline messages need: the fastest of them whose deadline has not
    passed. A hurry lasts until its deadline, not until its last piece has left, so the
    repairs a NACK asks for go at the message's pace too; and it ends there, so one message
    queued when the delay was short cannot keep the pace (and the window it widens) up for
    good."""

    __slots__ = ("_entries", "_expiry", "bps")

    def __init__(self) -> None:
        self._entries: deque[tuple[float, float]] = deque()  # (deadline, bits per second)
        self._expiry = math.inf  # the earliest deadline among the entries
        self.bps = 0.0

    def add(self, deadline: float, bps: float) -> bool:
        """A message needing ``bps`` until ``deadline``; True when the pace went up."""
        entries = self._entries
        while entries and entries[-1][0] <= deadline and entries[-1][1] <= bps:
            entries.pop()  # ends sooner and needs less: covered by the new one
        entries.append((deadline, bps))
        if len(entries) > _URGENT_ENTRIES:
            merged = (max(d for d, _ in entries), max(b for _, b in entries))
            entries.clear()
            entries.append(merged)
            self._expiry = merged[0]
        else:
            self._expiry = min(self._expiry, deadline)
        if bps > self.bps:
            self.bps = bps
            return True
        return False

    def expire(self, now: float) -> bool:
        """Forget the hurries whose deadlines have passed; True when the pace changed."""
        if now < self._expiry:
            return False
        kept = [(d, b) for d, b in self._entries if d > now]
        self._entries = deque(kept)
        self._expiry = min((d for d, _ in kept), default=math.inf)
        bps = max((b for _, b in kept), default=0.0)
        changed, self.bps = bps != self.bps, bps
        return changed


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
        "fec_ends",
        "fec_next_end",
        "kind",
        "message_id",
        "next_piece",
        "pieces",
        "prefix",
        "repaired",
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
        # FEC: the piece count at which the next parity group is complete (0: none), and
        # where all of this message's groups end (None: a group across messages).
        self.fec_next_end = 0
        self.fec_ends: tuple[int, ...] | None = None
        self.repaired: dict[int, float] | None = None  # piece -> when last repaired


Piece = tuple[_OutMessage, int]
"""A reliable message and the index of one of its pieces: what a packet must deliver."""


def _lifetime_us(message: _OutMessage, now: float) -> int | None:
    """What is left of the message's deadline, as a FRAGMENT carries it."""
    if message.deadline is None:
        return None
    return min(int((message.deadline - now) * 1e6), MAX_LIFETIME_US)


class _Control:
    """A frame sent before any fragment: an ABANDON, repeated until acknowledged; or, sent
    once, a NACK or a PARITY (whose ``deadline`` is the last moment it is worth sending)."""

    __slots__ = ("acked", "deadline", "frame", "parity", "repeat")

    def __init__(
        self,
        frame: bytes,
        *,
        repeat: bool = True,
        deadline: float | None = None,
        parity: bool = False,
    ) -> None:
        self.frame = frame
        self.acked = False
        self.repeat = repeat
        self.deadline = deadline
        self.parity = parity


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
        *,
        nack: bool = False,
        fec: bool = False,
        pacer: Pacer | None = None,
    ) -> None:
        """``nack``: keep messages with a deadline until it passes and repair what the peer's
        NACKs name; ``fec``: send PARITY for them. Both only if the peer negotiated
        recovery. ``pacer``: spread packets at the controller's ``pacing_bps`` (faster
        when a message's deadline needs it)."""
        self._config = config
        self._peer_max_ack_delay_s = peer_max_ack_delay_s
        self._counters = counters
        self._rtt = rtt
        self._cc = congestion
        self._pacer = pacer
        self._hurry_cap_bps: float | None = None  # the link's measured bottleneck rate
        self._urgency = _Urgency()  # the pace queued deadline messages need; 0 when none waits
        self._pace()
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
        # Recovery (PROTOCOL.md §8.10).
        self._answer_nacks = nack
        self._protect = fec
        self._held: dict[tuple[int, int], _OutMessage] = {}  # by (channel, id), for NACKs
        self._held_order: list[tuple[float, int, tuple[int, int]]] = []  # by deadline
        self._held_seq = 0
        self.held_bytes = 0
        """Bytes of messages kept for NACK repair until their deadline (at most
        max_send_queue_bytes; the earliest deadlines go first)."""
        self._budget = ParityBudget(config.fec_max_overhead)
        self._across: dict[int, AcrossGroup] = {}  # open groups across messages, by channel
        self._across_k = min(MAX_ACROSS_MEMBERS, max(2, math.ceil(1 / config.fec_max_overhead)))
        self._across_limit = self._max_payload - across_header_max(MAX_ACROSS_MEMBERS)
        self._level = (0.0, 0.0)  # the loss (%) and mean burst parity is sized for
        self._level_at = float("-inf")
        self._peer_nacks = False  # the peer asks for repairs: parity may leave some to NACK
        self._probe = False  # a tail probe (a PING) is due once everything queued has left

    # -- queueing ----------------------------------------------------------------------------

    def queue_message(self, channel: int, data: bytes, deadline: float | None, now: float) -> int:
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
        if deadline is not None and self._pacer is not None:
            self._hurry(size, deadline, now)
        self.queued_bytes += size
        self._counters.messages_sent += 1
        if deadline is not None:
            if self._answer_nacks:
                self._hold(message)
            if self._protect and kind != _RELIABLE:
                if message.pieces > 1:
                    message.fec_ends = group_ends(message.pieces)
                    message.fec_next_end = message.fec_ends[0]
                elif size <= self._across_limit:
                    message.fec_next_end = 1
        return mid

    def can_send_direct(self, now: float) -> bool:
        """True when a new message may skip the queues: nothing waits, the window is open and
        the pacer lets a packet go."""
        return not (
            self._active or self._repairs or self._controls or self._ping
        ) and self._may_send(now)

    def _may_send(self, now: float) -> bool:
        """The congestion window has room for a full packet and the pacer lets one go now."""
        window = self._cc.window_bytes
        urgency = self._urgency
        if urgency.bps and urgency.expire(now):
            self._pace()
        if urgency.bps:
            # A hurried message may have a round trip of its own pace in flight (the path's
            # round trip without queues: a standing queue must not widen the window).
            base_rtt = self._rtt.min_s if self._rtt.samples else self._rtt.srtt_s
            window = max(window, int(urgency.bps / 8 * (base_rtt + 0.01)))
        if self.bytes_in_flight + self._max_datagram > window:
            return False
        pacer = self._pacer
        return pacer is None or pacer.next_send_s(now, self._max_datagram) <= now

    def _hurry(self, size: int, deadline: float, now: float) -> None:
        """Pace fast enough that a message of ``size`` bytes queued now leaves in time for
        ``deadline`` (URGENT_SHARE of what is left after half a round trip of flight)."""
        assert self._pacer is not None
        left = (deadline - now - self._rtt.srtt_s / 2) * URGENT_SHARE
        if left <= 0:
            return  # it cannot arrive in time at the current delay: hurrying only adds queue
        if self._urgency.add(deadline, 8.0 * size / max(left, MIN_URGENT_S)):
            self._pace()

    def on_link(self, signals: LinkSignals) -> None:
        """Fresh delay and loss feedback for the congestion controller; the pacer follows."""
        self._cc.on_link(signals)
        self._hurry_cap_bps = signals.bandwidth_bps
        self._pace()

    def _pace(self) -> None:
        """Set the pacer to the controller's rate, or to what waiting deadlines need if that
        is faster (an unpaced controller stays unpaced)."""
        pacer = self._pacer
        if pacer is not None:
            base = self._cc.pacing_bps
            if base is None:
                pacer.set_rate(None)
                return
            # A hurry never goes past what the link was measured to carry: faster only
            # fills the bottleneck's buffer until it drops (unknown: no cap).
            urgent, cap = self._urgency.bps, self._hurry_cap_bps
            pacer.set_rate(max(base, urgent if cap is None else min(urgent, cap)))

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
        message = None
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
        self._probe = False  # this packet is the later arrival a pending probe was for
        if deadline is not None and (self._answer_nacks or self._protect):
            if message is None:
                message = _OutMessage(channel, kind, mid, data, deadline, size or 1)
                message.next_piece = 1
                message.state = _DONE
            if self._answer_nacks:
                self._hold(message)
            if self._protect and kind != _RELIABLE and size <= self._across_limit:
                self._join_across(message, now)
        return mid, payload

    @property
    def window_bytes(self) -> int:
        """The congestion window in force."""
        return self._cc.window_bytes

    @property
    def target_bps(self) -> float | None:
        """The controller's target media bitrate, if it has one."""
        return self._cc.target_bps

    @property
    def pacing_bps(self) -> float | None:
        """The rate the pacer releases packets at now (None: unpaced)."""
        pacer = self._pacer
        return None if pacer is None else pacer.rate_bps

    def queue_ping(self) -> None:
        self._ping = True

    @property
    def has_data(self) -> bool:
        return bool(self._active or self._repairs or self._controls or self._ping or self._probe)

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
        if self._probe:
            if self._active:
                self._probe = False  # new data follows: the evidence the probe was for
            elif not (self._controls or self._repairs):
                self._probe = False
                self._ping = True  # after everything else (parity, repairs) left
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
        if self._may_send(now):
            if self._controls:
                controls = []
                space = self._fill_controls(parts, controls, space, now)
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
            if self._controls:
                # Messages that expired while filling queued their ABANDONs: send them now,
                # or the packet may go out empty while a control waits for the next one.
                if controls is None:
                    controls = []
                space = self._fill_controls(parts, controls, space, now)
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
            or not self._may_send(now)
        ):
            return None
        chunk = message.chunk
        offset = index * chunk
        tail = fragment_tail(offset, chunk, _lifetime_us(message, now))
        payload = message.prefix + tail + message.view[offset : offset + chunk]
        message.next_piece = index + 1
        pieces = [(message, index)] if message.kind == _RELIABLE else _NO_PIECES
        self._record(pn, now, len(payload) + DATA_OVERHEAD_BYTES, pieces, None)
        if index + 1 == message.fec_next_end:
            self._group_sent(message, now)
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
        if self._pacer is not None:
            self._pacer.on_sent(now, size)
        self.last_eliciting_at = now
        if self._rto_base is None:
            self._rto_base = now  # RFC 6298 §5.1

    def _fill_controls(
        self, parts: list[bytes | memoryview], controls: list[_Control], space: int, now: float
    ) -> int:
        queue = self._controls
        while queue and len(queue[0].frame) <= space:
            control = queue.popleft()
            if control.acked:
                continue
            if control.deadline is not None:
                if now + self._rtt.srtt_s / 2 >= control.deadline:
                    continue  # a parity that would arrive after the deadline helps nobody
                if control.parity:
                    self._counters.fec_packets_sent += 1
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
            if index + 1 == message.fec_next_end:
                self._group_sent(message, now)
            if index + 1 == message.pieces:
                queue.popleft()
                if message.kind != _RELIABLE:
                    message.state = _DONE  # all of it left; nothing to wait for
                    self.queued_bytes -= len(data)
                if message.deadline is not None and index and self._peer_nacks:
                    self._probe_tail(now)
            return space - len(header) - length
        return space

    def _probe_tail(self, now: float) -> None:
        """The last piece of a message with a deadline left: on a lossy link, send a PING
        after it (and after its parity) unless more data follows, so that if the last packets
        are lost the peer sees a later one arrive, the evidence its NACK waits for
        (PROTOCOL.md §8.10; TCP's tail loss probe, RFC 8985 §7, sent at once because the
        deadline is close)."""
        if self._loss_level(now)[0]:
            self._probe = True

    def _fill_repairs(
        self, parts: list[bytes | memoryview], pieces: list[Piece], space: int, now: float
    ) -> int:
        """Move repairs into the packet while they fit."""
        repairs = self._repairs
        half_rtt = self._rtt.srtt_s / 2
        while repairs:
            message, index = repairs[0]
            acked = message.acked
            if acked is not None:  # reliable: until acknowledged
                if message.state != _PENDING or acked[index]:
                    repairs.popleft()
                    continue
            elif message.state == _EXPIRED:  # others: on a NACK, while they are held
                repairs.popleft()
                continue
            deadline = message.deadline
            if deadline is not None and now + half_rtt >= deadline:
                # It could not arrive in time (PROTOCOL.md §8.10): do not send it.
                repairs.popleft()
                self._counters.repairs_too_late += 1
                if acked is not None:
                    self._expire(message)
                continue
            piece = self._piece(message, index, now, space)
            if piece is None:
                return space
            repairs.popleft()
            header, offset, length = piece
            parts.append(header)
            parts.append(message.view[offset : offset + length])
            if acked is not None:
                pieces.append((message, index))
            repaired = message.repaired
            if repaired is None:
                repaired = message.repaired = {}
            repaired[index] = now
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
        if self._held_order:
            self._release_held(now)

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
            self._controls.extend(c for c in packet.controls if c.repeat and not c.acked)
        half_rtt = self._rtt.srtt_s / 2
        for message, index in packet.pieces:
            if message.state != _PENDING or message.acked[index]:  # type: ignore[index]
                continue
            repaired = message.repaired
            if repaired is not None and repaired.get(index, -1.0) > packet.sent_at:
                continue  # a NACK had it repaired already; that copy is on its way
            if message.deadline is not None and now + half_rtt >= message.deadline:
                # No repair could arrive in time (PROTOCOL.md §8.10): give the message up.
                self._counters.repairs_too_late += 1
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
        due = rto_at
        if self._loss_time is not None and (due is None or self._loss_time < due):
            due = self._loss_time
        if self._across:
            for group in self._across.values():
                if due is None or group.close_at < due:
                    due = group.close_at
        pacer = self._pacer
        if (
            pacer is not None
            and (self._active or self._repairs or self._controls)
            and self.bytes_in_flight + self._max_datagram <= self._cc.window_bytes
        ):
            # Data waits for the pacer alone: wake when it lets the next packet go.
            release = pacer.release_s(self._max_datagram)
            if due is None or release < due:
                due = release
        return due

    def handle_timer(self, now: float) -> None:
        if self._loss_time is not None and self._loss_time <= now:
            self._detect_lost(now)
        if self._rto_base is not None and now >= self._rto_base + self._rtt.rto_s(self._backoff):
            self._on_rto(now)
        self._release_fates(now)
        if self._across:
            for group in [g for g in self._across.values() if g.close_at <= now]:
                self._close_across(group, now)
        if self._held_order:
            self._release_held(now)

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

    # -- recovery: NACK repairs ----------------------------------------------------------------

    def queue_nack(self, frame: bytes) -> None:
        """Send a NACK frame (built by the receiving side) once, in the next packet."""
        if len(frame) <= self._max_payload:
            self._controls.append(_Control(frame, repeat=False))

    def on_nack(self, frame: NackFrame, now: float) -> None:
        """The peer misses pieces: repair the ones of held messages that can still arrive
        before their deadline (``now + srtt/2 < deadline``) and were not repaired within the
        last round trip (the NACK may predate that repair's arrival)."""
        self._counters.nacks_received += 1
        self._peer_nacks = True
        if self._held_order:
            self._release_held(now)
        held = self._held
        srtt = self._rtt.srtt_s
        repairs = self._repairs
        for request in frame.requests:
            message = held.get((request.channel, request.message_id))
            if message is None or message.state == _EXPIRED:
                continue
            acked = message.acked
            if acked is not None and message.state != _PENDING:
                continue  # reliable and acknowledged whole
            assert message.deadline is not None  # only messages with a deadline are held
            if now + srtt / 2 >= message.deadline:
                self._counters.repairs_too_late += 1
                continue
            sent = message.next_piece
            chunk = message.chunk
            if request.ranges:
                wanted: set[int] = set()
                for offset, length in request.ranges:
                    first = offset // chunk
                    last = min((offset + length - 1) // chunk, sent - 1)
                    wanted.update(range(first, last + 1))
                indices = sorted(wanted)
            else:
                indices = list(range(sent))
            repaired = message.repaired
            if repaired is None:
                repaired = message.repaired = {}
            urgent = []
            for index in indices:
                if acked is not None and acked[index]:
                    continue
                if repaired.get(index, -math.inf) > now - srtt:
                    continue
                repaired[index] = now  # also keeps a repeated NACK from queueing it twice
                urgent.append((message, index))
            # Ahead of the loss-detected repairs: these have a deadline close by.
            repairs.extendleft(reversed(urgent))
            self._counters.nack_repairs += len(urgent)

    def _hold(self, message: _OutMessage) -> None:
        """Keep a message with a deadline for NACK repairs until the deadline passes."""
        assert message.deadline is not None
        key = (message.channel, message.message_id)
        self._held[key] = message
        self._held_seq += 1
        heapq.heappush(self._held_order, (message.deadline, self._held_seq, key))
        self.held_bytes += len(message.data)
        limit = self._config.max_send_queue_bytes
        while self.held_bytes > limit:
            self._release_first()

    def _release_held(self, now: float) -> None:
        order = self._held_order
        while order and order[0][0] <= now:
            self._release_first()

    def _release_first(self) -> None:
        _, _, key = heapq.heappop(self._held_order)
        message = self._held.pop(key)
        self.held_bytes -= len(message.data)

    # -- recovery: parity (FEC) ----------------------------------------------------------------

    def _loss_level(self, now: float) -> tuple[float, float]:
        """Loss (%) and mean burst to size parity for; (0, 0) on a clean link."""
        if now - self._level_at >= LOSS_REFRESH_S:
            self._level_at = now
            loss = self.loss.loss_pct
            # Hysteresis: on at fec_min_loss_pct, off again below half of it. The recent loss
            # of a 1 % link, measured over a few seconds, wanders between 0.4 and 1.1 %.
            threshold = self._config.fec_min_loss_pct
            if self._level[0]:
                threshold /= 2
            if loss and loss >= threshold:
                self._level = (loss, self.loss.burst_loss)
            else:
                self._level = (0.0, 0.0)
        return self._level

    def _repair_rounds(self, deadline: float, now: float) -> int:
        """NACK rounds that still fit before ``deadline`` if the peer asks for repairs (it has
        sent a NACK before): the first needs the piece, the NACK and the repair to travel, 1.5
        RTT plus the reorder allowance; each next one another RTT."""
        if not (self._answer_nacks and self._peer_nacks):
            return 0
        srtt = self._rtt.srtt_s
        spare = deadline - now - 0.5 * srtt - 2 * self._config.nack_delay_s
        return max(0, int(spare // srtt)) if srtt > 0 else 0

    def _group_sent(self, message: _OutMessage, now: float) -> None:
        """The last piece of a parity group left for the first time: send its parity."""
        ends = message.fec_ends
        if ends is None:
            message.fec_next_end = 0
            self._join_across(message, now)
            return
        group = ends.index(message.fec_next_end)
        start = ends[group - 1] if group else 0
        end = ends[group]
        message.fec_next_end = ends[group + 1] if group + 1 < len(ends) else 0
        loss, burst = self._loss_level(now)
        k = end - start
        assert message.deadline is not None  # only messages with a deadline get parity
        # The target is the message's: shared among its groups.
        target = residual_target(loss, self._repair_rounds(message.deadline, now)) / len(ends)
        wanted = parity_count(k, loss, burst, target)
        if not wanted:
            return
        chunk = message.chunk
        size = len(message.data)
        m = self._budget.grant(wanted, chunk, min(end * chunk, size) - start * chunk)
        if not m:
            return
        view = message.view
        shards: list[bytes | memoryview] = [
            view[i * chunk : (i + 1) * chunk] for i in range(start, end)
        ]
        if len(shards[-1]) < chunk:
            shards[-1] = bytes(shards[-1]) + bytes(chunk - len(shards[-1]))
        lifetime = _lifetime_us(message, now)
        for index, shard in enumerate(fec.encode(shards, m)):
            header = parity_header(
                message.kind,
                message.channel,
                message.message_id,
                across=False,
                total_len=size,
                first_offset=start * chunk,
                lifetime_us=lifetime,
                k=k,
                m=m,
                index=index,
                members=(),
                length=chunk,
            )
            self._controls.append(
                _Control(header + shard, repeat=False, deadline=message.deadline, parity=True)
            )

    def _join_across(self, message: _OutMessage, now: float) -> None:
        """A one-piece message with a deadline left: add it to its channel's open group."""
        channel = message.channel
        group = self._across.get(channel)
        if group is None and not self._loss_level(now)[0]:
            return  # a clean link: no group
        if group is not None and not group.fits(message.message_id):
            self._close_across(group, now)
            group = None
        if group is None:
            assert message.deadline is not None
            # The parity must reach the receiver before the first member's deadline: it has
            # half a round trip to travel, and as much again as a margin.
            close_at = message.deadline - self._rtt.srtt_s
            group = AcrossGroup(channel, message.kind, message.deadline, close_at, now)
            self._across[channel] = group
        group.add(message.message_id, message.data)
        if len(group.members) >= self._across_k or now >= group.close_at:
            self._close_across(group, now)

    def _close_across(self, group: AcrossGroup, now: float) -> None:
        del self._across[group.channel]
        loss, burst = self._loss_level(now)
        k = len(group.members)
        # NACKs for the members began as they were found missing: count the rounds from the
        # first one's departure, a burst of message intervals later (a lost one-piece message
        # shows only when the next one arrives).
        interval = (now - group.opened_at) / (k - 1) if k > 1 else 0.0
        found = group.opened_at + interval * max(1.0, burst)
        rounds = self._repair_rounds(group.deadline, found)
        target = residual_target(loss, rounds)
        wanted = parity_count(k, loss, burst, target)
        data_bytes = sum(len(s) for s in group.shards)
        m = self._budget.grant(wanted, group.size, data_bytes) if wanted else 0
        if not m:
            return
        lifetime = min(int((group.deadline - now) * 1e6), MAX_LIFETIME_US)
        if lifetime <= 0:
            return
        members = tuple(group.members)
        for index, shard in enumerate(fec.encode(pad(group.shards, group.size), m)):
            header = parity_header(
                group.kind,
                group.channel,
                members[0],
                across=True,
                total_len=0,
                first_offset=0,
                lifetime_us=lifetime,
                k=k,
                m=m,
                index=index,
                members=members,
                length=group.size,
            )
            self._controls.append(
                _Control(header + shard, repeat=False, deadline=group.deadline, parity=True)
            )
