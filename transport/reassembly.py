"""The receiving half of the channels: reassembly, ordering, deadlines and memory bounds."""

from __future__ import annotations

import heapq
from collections import deque

from transport.config import ChannelKind, SessionConfig
from transport.events import Event, Message, MessageLate
from transport.rangeset import RangeSet
from transport.stats import Counters
from transport.wire import FragmentFrame

_RELIABLE = int(ChannelKind.RELIABLE)
_LATEST = int(ChannelKind.LATEST)


class _Partial:
    """A message with some of its bytes received."""

    __slots__ = ("alive", "buf", "channel", "covered", "expires", "message_id", "received", "total")

    def __init__(self, channel: int, message_id: int, total: int, expires: float | None) -> None:
        self.channel = channel
        self.message_id = message_id
        self.total = total
        self.buf = bytearray(total)
        self.covered = RangeSet()
        self.received = 0  # new bytes so far; the message may be whole once it reaches total
        self.expires = expires
        self.alive = True


class _InChannel:
    __slots__ = ("kind", "newest", "next_id", "partials", "ready", "skipped")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.partials: dict[int, _Partial] = {}
        self.next_id = 0  # reliable: the next id to deliver
        self.ready: dict[int, bytes] = {}  # reliable: complete, waiting for an earlier id
        self.skipped: set[int] = set()  # reliable: abandoned or late ids ahead of next_id
        self.newest = -1  # latest-only: the newest id delivered


class Reassembler:
    """Turns fragments into :class:`Message` and :class:`MessageLate` events.

    Memory: partial and out-of-order messages together stay within ``max_reassembly_bytes``,
    except that the next message a reliable channel waits for is always admitted (else an
    out-of-order backlog could block it forever); so the bound is ``max_reassembly_bytes`` plus
    one ``max_message_bytes`` per reliable channel. Unreliable partials are evicted oldest first.
    """

    def __init__(self, config: SessionConfig, counters: Counters, events: deque[Event]) -> None:
        self._config = config
        self._counters = counters
        self._events = events
        self._channels: dict[int, _InChannel] = {}
        self._order: dict[tuple[int, int], _Partial] = {}  # all partials, oldest first
        self._timers: list[tuple[float, int, _Partial]] = []
        self._timer_seq = 0
        self.held_bytes = 0

    # -- input -------------------------------------------------------------------------------

    def on_fragment(self, frame: FragmentFrame, now: float) -> None:
        channel = self._channels.get(frame.channel)
        if channel is None:
            channel = self._channels[frame.channel] = _InChannel(frame.kind)
        elif channel.kind != frame.kind:
            self._counters.decode_failures += 1  # a peer changing a channel's kind: drop
            return
        mid = frame.message_id
        if channel.kind == _RELIABLE:
            if mid < channel.next_id or mid in channel.ready or mid in channel.skipped:
                return  # a repair of something already delivered or given up
            if mid >= channel.next_id + self._config.max_ordered_window:
                self._counters.messages_dropped += 1
                return
        elif channel.kind == _LATEST and mid <= channel.newest:
            return  # superseded already
        if frame.total_len > self._config.max_message_bytes:
            self._counters.messages_dropped += 1
            return
        if frame.offset == 0 and len(frame.data) == frame.total_len:
            self._complete(channel, frame.channel, mid, frame.data)
            return
        partial = channel.partials.get(mid)
        if partial is None:
            partial = self._start(channel, frame, now)
            if partial is None:
                return
        elif partial.total != frame.total_len:
            self._counters.decode_failures += 1
            return
        data = frame.data
        lo = frame.offset
        hi = lo + len(data) - 1
        covered = partial.covered
        if not covered.add_new(lo, hi):
            return  # a duplicate (a repair of a piece that had arrived after all)
        partial.buf[lo : hi + 1] = data
        partial.received += len(data)
        # The count alone could be fooled by overlapping pieces, so confirm with the ranges.
        if partial.received >= partial.total and covered.covers(0, partial.total - 1):
            self._drop_partial(channel, partial)
            self._complete(channel, frame.channel, mid, bytes(partial.buf))

    def on_abandon(self, channel_id: int, message_id: int) -> None:
        """The sender gave up on ``message_id``: stop waiting for it."""
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _InChannel(_RELIABLE)
        partial = channel.partials.get(message_id)
        if partial is not None:
            self._drop_partial(channel, partial)
            self._late(channel_id, message_id)
        if channel.kind != _RELIABLE:
            return
        if message_id < channel.next_id or message_id in channel.ready:
            return
        if message_id >= channel.next_id + self._config.max_ordered_window:
            return
        if partial is None:
            self._late(channel_id, message_id)
        channel.skipped.add(message_id)
        self._advance(channel, channel_id)

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

    def _start(self, channel: _InChannel, frame: FragmentFrame, now: float) -> _Partial | None:
        total = frame.total_len
        head = channel.kind == _RELIABLE and frame.message_id == channel.next_id
        limit = self._config.max_reassembly_bytes
        if not head and self.held_bytes + total > limit:
            self._evict(limit - total)
            if self.held_bytes + total > limit:
                if channel.kind != _RELIABLE:
                    self._counters.messages_dropped += 1
                return None  # reliable: the sender repairs it once there is room
        expires: float | None = None
        if frame.lifetime_us is not None:
            expires = now + frame.lifetime_us / 1e6
        elif channel.kind != _RELIABLE:
            expires = now + self._config.reassembly_timeout_s
        partial = _Partial(frame.channel, frame.message_id, total, expires)
        channel.partials[frame.message_id] = partial
        self._order[(frame.channel, frame.message_id)] = partial
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

    def _drop_partial(self, channel: _InChannel, partial: _Partial) -> None:
        partial.alive = False
        del channel.partials[partial.message_id]
        del self._order[(partial.channel, partial.message_id)]
        self.held_bytes -= partial.total

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
            self._deliver(channel_id, mid, data)
            for old in [p for m, p in channel.partials.items() if m < mid]:
                self._drop_partial(channel, old)
                self._counters.messages_dropped += 1
        else:
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
        self._events.append(Message(channel=channel_id, message_id=mid, data=data))

    def _late(self, channel_id: int, mid: int) -> None:
        self._counters.messages_late += 1
        self._events.append(MessageLate(channel=channel_id, message_id=mid))
