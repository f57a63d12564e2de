"""When the receiver asks for missing pieces (NACK frames, PROTOCOL.md §4.9, §8.10): sans-I/O,
the time is an argument.

Two things are asked for:

* the holes of a partial message with a lifetime: bytes missing below the highest one
  received, once the hole has lasted ``nack_delay_s`` (a reorder allowance); and what is
  missing beyond it once the message has stopped moving *and* a packet sent after its last
  piece to arrive has come (its last pieces were lost: nothing later in the message will
  reveal that), ``nack_delay_s`` after both. The second condition is RACK's (RFC 8985): only
  a later delivery is evidence of loss, so a path that stalls as a whole (a Wi-Fi channel
  scan) holds no NACK back that would repair pieces still on their way;
* unreliable messages of which nothing arrived although a later one on the channel did
  (the reassembler's gaps), named whole.

A message is asked for again at most once per round trip (the repair needs that long to
come back), and never once a repair asked for now could not arrive before the message's
deadline: the sender repairs only when ``now + srtt/2 < deadline`` at its end, so with the
receiver's expiry ``expires`` (its deadline plus one way) the last useful NACK leaves before
``expires - 1.5 * srtt``. Without an RTT sample yet the receiver asks anyway and lets the
sender judge. Everything kept is bounded by the reassembler's partials and ``MAX_GAPS``.
"""

from __future__ import annotations

from transport.reassembly import Gap, Partial, Reassembler
from transport.rtt import RttEstimator
from transport.wire import (
    MAX_NACK_MESSAGES,
    MAX_NACK_RANGES,
    NackRequest,
    encode_nack,
    varint_size,
)

_NEVER = float("inf")
_NO_HOLE = float("-inf")
WATCH_S = 1.0
"""How long after a gap or a reordering in the packet numbers partials are watched."""


class NackScheduler:
    """Decides which NACK frames the receiver sends and when."""

    def __init__(
        self, reassembler: Reassembler, rtt: RttEstimator, delay_s: float, max_frame_bytes: int
    ) -> None:
        self._reassembler = reassembler
        self._rtt = rtt
        self._delay = delay_s
        self._max_frame = max_frame_bytes
        self.due: float | None = None
        """When :meth:`poll` has work next (None: nothing tracked)."""
        self._watch_until = _NO_HOLE

    def on_batch(self, now: float, highest_before: int, highest: int, opened: int) -> None:
        """Call after every batch of received datagrams while something is tracked: the
        highest packet number before and after it, and how many packets it opened.

        Watching partials costs about a microsecond per packet, so it is done only while the
        packet numbers have lately shown a gap or a reordering (within ``WATCH_S``): every
        loss shows as one, and a clean link never pays."""
        irregular = highest - highest_before != opened
        if irregular:
            fresh = now >= self._watch_until
            self._watch_until = now + WATCH_S
            self._observe(now, highest_before, highest, fresh)
        elif now < self._watch_until:
            self._observe(now, highest_before, highest, False)
        elif self._reassembler.gaps:
            self._observe_gaps()

    def _observe(self, now: float, highest_before: int, highest: int, fresh: bool) -> None:
        """Note which tracked partials moved. It only brings :attr:`due` forward for what
        became due earlier (a hole, a later arrival, a new gap); a due time left too early by
        a message that moved since costs one :meth:`poll`, which recomputes it.

        ``fresh``: watching starts again, and what each partial did meanwhile is unknown; it
        is taken as having moved now, in a packet sent before this batch (so a packet of this
        batch counts as a later arrival)."""
        due = _NEVER if self.due is None else self.due
        soon = now + self._delay
        gate = self._gate()
        for partial in self._reassembler.tracked.values():
            covered = partial.covered
            snapshot = (partial.contig, len(covered), covered.highest or 0)
            if fresh or not partial.nack_snapshot:
                partial.nack_snapshot = snapshot
                partial.nack_moved_at = now
                partial.nack_pn = highest_before if fresh else highest
                partial.nack_later_at = _NEVER
                partial.nack_hole_at = _NO_HOLE
            elif snapshot != partial.nack_snapshot:
                partial.nack_snapshot = snapshot
                partial.nack_moved_at = now
                partial.nack_pn = highest
                partial.nack_later_at = _NEVER
            if highest > partial.nack_pn and partial.nack_later_at == _NEVER:
                partial.nack_later_at = now  # something sent after it arrived: evidence
                if not partial.nack_done:
                    due = min(due, max(soon, partial.nack_at + gate))
            if covered:
                if partial.nack_hole_at == _NO_HOLE:
                    partial.nack_hole_at = now
                    if not partial.nack_done:
                        due = min(due, max(soon, partial.nack_at + gate))
            else:
                partial.nack_hole_at = _NO_HOLE
        self.due = None if due == _NEVER else due
        if self._reassembler.gaps:
            self._observe_gaps()

    def _observe_gaps(self) -> None:
        due = _NEVER if self.due is None else self.due
        for gap in self._reassembler.gaps.values():
            due = min(due, gap.expires if gap.done else self._gap_due(gap))
        self.due = None if due == _NEVER else due

    def poll(self, now: float) -> list[bytes]:
        """The NACK frames due at ``now`` (possibly none)."""
        rtt = self._rtt.srtt_s if self._rtt.samples else 0.0
        requests: list[NackRequest] = []
        for (channel, mid), partial in self._reassembler.tracked.items():
            if partial.nack_done or self._partial_due(partial) > now:
                continue
            assert partial.expires is not None  # tracked partials have a lifetime
            if now + 1.5 * rtt >= partial.expires:
                partial.nack_done = True  # no repair could make it in time any more
                continue
            stalled = now >= self._stalled_at(partial)
            ranges = partial.missing(tail=stalled)
            if not ranges:
                partial.nack_hole_at = _NO_HOLE
                continue
            requests.append(NackRequest(channel, mid, _fit(ranges)))
            partial.nack_at = now
        gaps = self._reassembler.gaps
        for key, gap in list(gaps.items()):
            if now >= gap.expires:
                del gaps[key]
                continue
            if gap.done or self._gap_due(gap) > now:
                continue
            if now + 1.5 * rtt >= gap.expires:
                gap.done = True
                continue
            requests.append(NackRequest(key[0], key[1]))
            gap.nack_at = now
        self.due = self._next_due()
        return self._frames(requests)

    # -- internals -----------------------------------------------------------------------

    def _gate(self) -> float:
        """The least time between two NACKs of one message: a round trip."""
        return max(self._rtt.srtt_s, 2 * self._delay)

    def _stalled_at(self, partial: Partial) -> float:
        """When the tail of ``partial`` counts as lost (never without a later arrival)."""
        return max(partial.nack_moved_at, partial.nack_later_at) + self._delay

    def _partial_due(self, partial: Partial) -> float:
        start = self._stalled_at(partial)
        if partial.nack_hole_at != _NO_HOLE:
            start = min(start, partial.nack_hole_at + self._delay)
        return max(start, partial.nack_at + self._gate())

    def _gap_due(self, gap: Gap) -> float:
        return max(gap.seen_at + self._delay, gap.nack_at + self._gate())

    def _next_due(self) -> float | None:
        due = _NEVER
        for partial in self._reassembler.tracked.values():
            if not partial.nack_done:
                due = min(due, self._partial_due(partial))
        for gap in self._reassembler.gaps.values():
            due = min(due, gap.expires if gap.done else self._gap_due(gap))
        return None if due == _NEVER else due

    def _frames(self, requests: list[NackRequest]) -> list[bytes]:
        """The requests packed into as few frames as fit ``max_frame_bytes`` each."""
        frames = []
        batch: list[NackRequest] = []
        size = 2  # type and count
        for request in requests:
            extra = _request_size(request)
            if batch and (len(batch) == MAX_NACK_MESSAGES or size + extra > self._max_frame):
                frames.append(encode_nack(batch))
                batch, size = [], 2
            batch.append(request)
            size += extra
        if batch:
            frames.append(encode_nack(batch))
        return frames


def _request_size(request: NackRequest) -> int:
    size = 3 + varint_size(request.message_id)  # channel, id, range count
    for offset, length in request.ranges:
        size += varint_size(offset) + varint_size(length)
    return size


def _fit(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """At most MAX_NACK_RANGES ranges: the last ones merged into one (asking for a few bytes
    that did arrive costs less than asking for the rest a round trip later)."""
    if len(ranges) <= MAX_NACK_RANGES:
        return tuple(ranges)
    head = ranges[: MAX_NACK_RANGES - 1]
    start = ranges[MAX_NACK_RANGES - 1][0]
    last_offset, last_length = ranges[-1]
    return (*head, (start, last_offset + last_length - start))
