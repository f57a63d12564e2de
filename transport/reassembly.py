"""The receiving half of the channels: reassembly, ordering, deadlines and memory bounds."""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque

from transport.config import ChannelKind, SessionConfig
from transport.errors import DecodeError
from transport.events import Event, Message, MessageLate
from transport.rangeset import RangeSet
from transport.stats import Counters
from transport.wire import HAS_DEADLINE, FragmentFrame, fragment_prefix, parse_piece_tail

_RELIABLE = int(ChannelKind.RELIABLE)
_UNRELIABLE = int(ChannelKind.UNRELIABLE)
_LATEST = int(ChannelKind.LATEST)

_NEVER = float("-inf")

SEEN_WINDOW = 1024
"""Recovery: ids of finished unreliable messages remembered per channel, so that a repair or
a rebuilt piece arriving after its message was delivered (or given up) is not taken again."""
MAX_GAPS = 64
"""Recovery: unreliable messages of which nothing arrived, remembered to be asked for."""
RECENT_BYTES = 1024 * 1024
"""Recovery: bytes of recent one-piece messages kept as shards of groups across messages."""

# What on_fragment did with a fragment.
ACCEPTED = 0
REFUSED = 1
VIOLATION = 2


class Partial:
    """A message with some of its bytes received: a prefix ``[0, contig)`` and, beyond it,
    the ranges in ``covered`` (pieces that came out of order).

    A partial with a lifetime on a session doing recovery is *tracked*: the NACK scheduler
    (:mod:`transport.nack`) keeps its own state in the ``nack_*`` slots."""

    __slots__ = (
        "alive",
        "buf",
        "channel",
        "contig",
        "covered",
        "expires",
        "message_id",
        "nack_at",
        "nack_done",
        "nack_hole_at",
        "nack_later_at",
        "nack_moved_at",
        "nack_pn",
        "nack_snapshot",
        "total",
    )

    def __init__(self, channel: int, message_id: int, total: int, expires: float | None) -> None:
        self.channel = channel
        self.message_id = message_id
        self.total = total
        self.buf = bytearray(total)
        self.contig = 0
        self.covered = RangeSet()
        self.expires = expires
        self.alive = True
        # NACK scheduler state (tracked partials only): when it last moved, its shape and the
        # highest packet number received then, since when a later packet has arrived, since
        # when it has had a hole, when it was last asked for, and whether asking is over.
        self.nack_moved_at = 0.0
        self.nack_snapshot: tuple[int, ...] = ()
        self.nack_pn = -1
        self.nack_later_at = float("inf")
        self.nack_hole_at = _NEVER
        self.nack_at = _NEVER
        self.nack_done = False

    def holds(self, lo: int, hi: int) -> bool:
        """True when every byte of ``[lo, hi)`` has arrived."""
        return hi <= self.contig or self.covered.covers(lo, hi - 1)

    def missing(self, tail: bool) -> list[tuple[int, int]]:
        """The ``(offset, length)`` ranges not received yet: the holes below the highest byte
        received, and with ``tail`` also what lies beyond it."""
        ranges = []
        pos = self.contig
        for lo, hi in self.covered.ascending():
            ranges.append((pos, lo - pos))  # covered ranges all start above contig
            pos = hi + 1
        if tail and pos < self.total:
            ranges.append((pos, self.total - pos))
        return ranges

    def cover(self, lo: int, hi: int) -> bool:
        """Record bytes ``[lo, hi]`` as received; False if all of them already were."""
        contig = self.contig
        if lo > contig:
            return self.covered.add_new(lo, hi)
        if hi < contig:
            return False
        contig = hi + 1
        covered = self.covered
        while covered and covered.lowest <= contig:  # earlier out-of-order pieces now join
            contig = max(contig, covered.pop_lowest() + 1)
        self.contig = contig
        return True


class Gap:
    """Recovery: an unreliable message of which nothing arrived though a later one did."""

    __slots__ = ("done", "expires", "nack_at", "seen_at")

    def __init__(self, seen_at: float, expires: float) -> None:
        self.seen_at = seen_at
        self.expires = expires  # estimated from the lifetime of the message that revealed it
        self.nack_at = float("-inf")
        self.done = False  # no NACK can help any more


class _InChannel:
    __slots__ = (
        "finished_bits",
        "finished_high",
        "kind",
        "newest",
        "next_id",
        "partials",
        "ready",
        "skipped",
        "top",
        "tracked",
    )

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.partials: dict[int, Partial] = {}
        self.next_id = 0  # reliable: the next id to deliver
        self.ready: dict[int, bytes] = {}  # reliable: complete, waiting for an earlier id
        self.skipped: set[int] = set()  # reliable: abandoned or late ids ahead of next_id
        self.newest = -1  # latest-only: the newest id delivered
        # Recovery, unreliable and latest-only channels with deadlines: the finished ids
        # (delivered or given up) as a bit window below the highest, and the highest id any
        # fragment came for (a jump beyond it reveals messages of which nothing arrived).
        self.tracked = False
        self.finished_high = -1
        self.finished_bits = 0  # bit i: id finished_high - i is finished
        self.top = -1

    def is_finished(self, mid: int) -> bool:
        high = self.finished_high
        if mid > high:
            return False
        back = high - mid
        return back >= SEEN_WINDOW or bool(self.finished_bits >> back & 1)

    def mark_finished(self, mid: int) -> None:
        high = self.finished_high
        if mid > high:
            step = mid - high
            bits = self.finished_bits << step if step < SEEN_WINDOW else 0
            self.finished_bits = (bits | 1) & _SEEN_MASK
            self.finished_high = mid
        elif high - mid < SEEN_WINDOW:
            self.finished_bits |= 1 << (high - mid)


_SEEN_MASK = (1 << SEEN_WINDOW) - 1


class Reassembler:
    """Turns fragments into :class:`Message` and :class:`MessageLate` events.

    Memory: partial and out-of-order messages together stay within ``max_reassembly_bytes``,
    except that the next message a reliable channel waits for may use one more
    ``max_message_bytes`` of headroom (else an out-of-order backlog could lock it out); so the
    bound is ``max_reassembly_bytes + max_message_bytes``. Unreliable partials are evicted
    oldest first; reliable fragments that do not fit are refused and repaired later.
    """

    def __init__(self, config: SessionConfig, counters: Counters, events: deque[Event]) -> None:
        self._config = config
        self._max_message = config.max_message_bytes
        self._counters = counters
        self._events = events
        self._channels: dict[int, _InChannel] = {}
        self._order: dict[tuple[int, int], Partial] = {}  # all partials, oldest first
        self._timers: list[tuple[float, int, Partial]] = []
        self._timer_seq = 0
        self.held_bytes = 0
        self.undelivered_bytes = 0
        """Bytes of Message events the application has not taken yet (the session lowers it
        in next_event); above max_undelivered_bytes new messages are refused or dropped."""
        self._max_undelivered = config.max_undelivered_bytes
        self._lane = b""  # the header bytes the last piece's message shares (take_lane)
        self._lane_partial: Partial | None = None
        self._lane_channel: _InChannel | None = None
        self.track = False
        """Recovery is on (NACK and PARITY negotiated): fragments with a lifetime are tracked
        (see :class:`_InChannel` and the attributes below); set by the session."""
        self.track_nacks = False
        """With ``track``: also keep the state the NACK scheduler reads (below)."""
        self.tracked: dict[tuple[int, int], Partial] = {}
        """Partials with a lifetime, for the NACK scheduler (``track_nacks`` only)."""
        self.gaps: dict[tuple[int, int], Gap] = {}
        """Unreliable messages of which nothing arrived, to be asked for (``track_nacks``)."""
        self.recent: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        """Recent one-piece unreliable messages by (channel, id): the shards a group across
        messages is rebuilt from (``track`` only), at most RECENT_BYTES."""
        self._recent_bytes = 0

    # -- input -------------------------------------------------------------------------------

    def on_fragment(self, frame: FragmentFrame, now: float) -> int:
        """Take one fragment; see :meth:`on_piece`."""
        return self.on_piece(
            frame.kind,
            frame.channel,
            frame.message_id,
            frame.total_len,
            frame.offset,
            frame.lifetime_us,
            frame.data,
            now,
        )

    def on_piece(
        self,
        kind: int,
        channel_id: int,
        mid: int,
        total: int,
        offset: int,
        lifetime_us: int | None,
        data: bytes,
        now: float,
    ) -> int:
        """Take one fragment, as fields; return ACCEPTED, REFUSED or VIOLATION.

        REFUSED means "no room now" for a reliable fragment: the session must not acknowledge
        the packet, so the sender repairs it later (an acknowledged fragment that was thrown
        away would stall the channel for good). VIOLATION means the peer broke the protocol.
        """
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _InChannel(kind)
        elif channel.kind != kind:
            return VIOLATION  # a channel changed its kind mid-session
        if total > self._max_message:
            return VIOLATION  # larger than we said we take
        if (
            lifetime_us is not None
            and self.track
            and kind != _RELIABLE
            and self._track(channel, channel_id, mid, offset, total, data, lifetime_us, now)
        ):
            return ACCEPTED  # a repair or rebuild of a message already finished
        partial = channel.partials.get(mid)
        if partial is None:
            reliable = kind == _RELIABLE
            if reliable:
                if mid < channel.next_id or mid in channel.ready or mid in channel.skipped:
                    return ACCEPTED  # a repair of something already delivered or given up
                if mid >= channel.next_id + self._config.max_ordered_window:
                    return REFUSED  # too far ahead: repaired once the window has moved
            elif kind == _LATEST and mid <= channel.newest:
                return ACCEPTED  # superseded already
            if self.undelivered_bytes > self._max_undelivered:
                # The application is not taking messages as fast as they come: back-pressure.
                # Reliable pieces are refused (the sender repairs them later, and its window
                # shrinks as for loss); others are dropped.
                if reliable:
                    return REFUSED
                self._counters.messages_dropped += 1
                return ACCEPTED
            if offset == 0 and len(data) == total:
                if reliable and mid != channel.next_id and not self._has_room(total, False):
                    return REFUSED
                self._complete(channel, channel_id, mid, data)
                return ACCEPTED
            partial = self._start(channel, channel_id, mid, total, lifetime_us, now)
            if partial is None:
                return REFUSED if reliable else ACCEPTED
        elif partial.total != total:
            return VIOLATION
        # The next piece of this message may take the lane (see :meth:`take_lane`).
        flags = kind | (HAS_DEADLINE if lifetime_us is not None else 0)
        self._lane = fragment_prefix(flags, channel_id, mid, total)
        self._lane_partial = partial
        self._lane_channel = channel
        return self._add(channel, partial, offset, data)

    def _track(
        self,
        channel: _InChannel,
        channel_id: int,
        mid: int,
        offset: int,
        total: int,
        data: bytes,
        lifetime_us: int,
        now: float,
    ) -> bool:
        """Recovery bookkeeping for a fragment with a lifetime on an unreliable or latest-only
        channel; True when its message is finished already (drop the fragment)."""
        if not channel.tracked:
            channel.tracked = True
            channel.finished_high = channel.top = mid - 1
        if channel.is_finished(mid):
            return True
        key = (channel_id, mid)
        gaps = self.gaps
        if gaps:
            gaps.pop(key, None)
        top = channel.top
        if mid > top:
            if mid > top + 1 and channel.kind == _UNRELIABLE and self.track_nacks:
                # Nothing came of the ids in between yet: ask for them (a newer message makes
                # older ones moot on a latest-only channel).
                expires = now + lifetime_us / 1e6
                for missing in range(max(top + 1, mid - MAX_GAPS), mid):
                    gaps[(channel_id, missing)] = Gap(now, expires)
                while len(gaps) > MAX_GAPS:
                    del gaps[next(iter(gaps))]
            channel.top = mid
        if offset == 0 and len(data) == total:
            recent = self.recent
            if key not in recent:
                recent[key] = data
                self._recent_bytes += len(data)
                while self._recent_bytes > RECENT_BYTES:
                    self._recent_bytes -= len(recent.popitem(last=False)[1])
        return False

    def partial(self, channel_id: int, mid: int) -> Partial | None:
        """The partial message ``mid`` of ``channel_id``, if one is being reassembled."""
        channel = self._channels.get(channel_id)
        return channel.partials.get(mid) if channel is not None else None

    def finished(self, channel_id: int, mid: int) -> bool:
        """True when message ``mid`` needs nothing more: delivered, superseded or given up (as
        far as this side remembers; unreliable channels remember only while tracked)."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return False
        if channel.kind == _RELIABLE:
            return mid < channel.next_id or mid in channel.ready or mid in channel.skipped
        if channel.kind == _LATEST and mid <= channel.newest:
            return True
        return channel.tracked and channel.is_finished(mid)

    def take_lane(self, payload: bytes) -> bool:
        """Take ``payload`` if it is exactly one FRAGMENT of the message the last piece went
        to; return False (having done nothing) otherwise, and the caller parses it fully.

        The receiver's fast lane for bulk data: a message's pieces share their first header
        bytes, so comparing them stands for parsing and checking kind, channel, id and size.
        """
        lane = self._lane
        partial = self._lane_partial
        if partial is None or not partial.alive or not payload.startswith(lane):
            return False
        try:
            offset, _, length, pos = parse_piece_tail(payload, len(lane), lane[1] & HAS_DEADLINE)
        except DecodeError:
            return False  # the full parse reports it
        if pos + length != len(payload) or offset + length > partial.total or length == 0:
            return False
        end = offset + length
        if offset == partial.contig and not partial.covered:
            partial.contig = end  # the next piece in order: the bulk case
        elif not partial.cover(offset, end - 1):
            return True  # a duplicate (a repair of a piece that had arrived after all)
        # The piece is copied once, straight from the packet into the message.
        partial.buf[offset:end] = memoryview(payload)[pos:]
        if partial.contig >= partial.total:
            self._finish(self._lane_channel, partial)  # type: ignore[arg-type]
        return True

    def _add(self, channel: _InChannel, partial: Partial, offset: int, data: bytes) -> int:
        """Copy a piece into its partial message; deliver the message once whole."""
        end = offset + len(data)
        if not partial.cover(offset, end - 1):
            return ACCEPTED  # a duplicate (a repair of a piece that had arrived after all)
        partial.buf[offset:end] = data
        if partial.contig >= partial.total:
            self._finish(channel, partial)
        return ACCEPTED

    def _finish(self, channel: _InChannel, partial: Partial) -> None:
        """Deliver a partial that has all its bytes."""
        self._drop_partial(channel, partial)
        self._complete(channel, partial.channel, partial.message_id, bytes(partial.buf))

    def _has_room(self, size: int, head: bool) -> bool:
        """Whether ``size`` more bytes fit. The next message a reliable channel waits for
        may use one extra ``max_message_bytes`` of headroom, so an out-of-order backlog can
        never lock it out; everything else must fit ``max_reassembly_bytes``."""
        limit = self._config.max_reassembly_bytes
        if head:
            limit += self._config.max_message_bytes
        return self.held_bytes + size <= limit

    def on_abandon(self, channel_id: int, message_id: int) -> int:
        """The sender gave up on ``message_id``: stop waiting for it. Returns ACCEPTED, or
        REFUSED when the id is beyond the ordering window (acknowledge it later)."""
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _InChannel(_RELIABLE)
        if channel.kind == _RELIABLE:
            if message_id in channel.skipped:
                return ACCEPTED  # a repeated ABANDON: reported already
            if message_id >= channel.next_id + self._config.max_ordered_window:
                return REFUSED
        partial = channel.partials.get(message_id)
        if partial is not None:
            self._drop_partial(channel, partial)
            self._late(channel_id, message_id)
        if channel.kind != _RELIABLE:
            return ACCEPTED
        if message_id < channel.next_id or message_id in channel.ready:
            return ACCEPTED
        if partial is None:
            self._late(channel_id, message_id)
        channel.skipped.add(message_id)
        self._advance(channel, channel_id)
        return ACCEPTED

    # -- timers ------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, partial = heapq.heappop(timers)
            if not partial.alive:
                continue
            channel = self._channels[partial.channel]
            self._drop_partial(channel, partial)
            self._late(partial.channel, partial.message_id)
            if channel.kind == _RELIABLE:
                channel.skipped.add(partial.message_id)
                self._advance(channel, partial.channel)

    # -- internals ---------------------------------------------------------------------------

    def _start(
        self,
        channel: _InChannel,
        channel_id: int,
        mid: int,
        total: int,
        lifetime_us: int | None,
        now: float,
    ) -> Partial | None:
        head = channel.kind == _RELIABLE and mid == channel.next_id
        if not self._has_room(total, head):
            self._evict(self._config.max_reassembly_bytes - total)
            if not self._has_room(total, head):
                if channel.kind != _RELIABLE:
                    self._counters.messages_dropped += 1
                return None  # reliable: not acknowledged, so the sender repairs it later
        expires: float | None = None
        if lifetime_us is not None:
            expires = now + lifetime_us / 1e6
        elif channel.kind != _RELIABLE:
            expires = now + self._config.reassembly_timeout_s
        partial = Partial(channel_id, mid, total, expires)
        channel.partials[mid] = partial
        self._order[(channel_id, mid)] = partial
        if lifetime_us is not None and self.track_nacks:
            partial.nack_moved_at = now
            self.tracked[(channel_id, mid)] = partial
        self.held_bytes += total
        if expires is not None:
            self._timer_seq += 1
            heapq.heappush(self._timers, (expires, self._timer_seq, partial))
        return partial

    def _evict(self, target: int) -> None:
        """Drop unreliable partials, oldest first, until ``held_bytes <= target``."""
        for partial in list(self._order.values()):
            if self.held_bytes <= target:
                return
            channel = self._channels[partial.channel]
            if channel.kind == _RELIABLE:
                continue
            self._drop_partial(channel, partial)
            self._counters.messages_dropped += 1

    def _drop_partial(self, channel: _InChannel, partial: Partial) -> None:
        partial.alive = False
        del channel.partials[partial.message_id]
        key = (partial.channel, partial.message_id)
        del self._order[key]
        self.held_bytes -= partial.total
        if self.tracked:
            self.tracked.pop(key, None)

    def _complete(self, channel: _InChannel, channel_id: int, mid: int, data: bytes) -> None:
        if channel.kind == _RELIABLE:
            if mid != channel.next_id:
                channel.ready[mid] = data
                self.held_bytes += len(data)
                return
            self._deliver(channel_id, mid, data)
            channel.next_id += 1
            self._advance(channel, channel_id)
        elif channel.kind == _LATEST:
            channel.newest = mid
            if channel.tracked:
                channel.mark_finished(mid)
            self._deliver(channel_id, mid, data)
            for old in [p for m, p in channel.partials.items() if m < mid]:
                self._drop_partial(channel, old)
                self._counters.messages_dropped += 1
        else:
            if channel.tracked:
                channel.mark_finished(mid)
            self._deliver(channel_id, mid, data)

    def _advance(self, channel: _InChannel, channel_id: int) -> None:
        """Deliver what waited behind ``next_id`` on a reliable channel."""
        while True:
            nid = channel.next_id
            data = channel.ready.pop(nid, None)
            if data is not None:
                self.held_bytes -= len(data)
                self._deliver(channel_id, nid, data)
            elif nid in channel.skipped:
                channel.skipped.discard(nid)
            else:
                return
            channel.next_id = nid + 1

    def _deliver(self, channel_id: int, mid: int, data: bytes) -> None:
        counters = self._counters
        counters.messages_delivered += 1
        counters.message_bytes_delivered += len(data)
        self.undelivered_bytes += len(data)
        self._events.append(Message(channel=channel_id, message_id=mid, data=data))

    def _late(self, channel_id: int, mid: int) -> None:
        channel = self._channels[channel_id]
        if channel.tracked:
            channel.mark_finished(mid)
        self._counters.messages_late += 1
        self._events.append(MessageLate(channel=channel_id, message_id=mid))
