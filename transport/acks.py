"""The receiving side of acknowledgements: which packet numbers arrived, and when to say so."""

from __future__ import annotations

from transport.rangeset import RangeSet
from transport.wire import encode_ack

MAX_ACK_RANGES_SENT = 32


class AckTracker:
    """Tracks received packet numbers and decides when an ACK frame is due.

    An ACK goes out at once after ``ack_every`` ack-eliciting packets or on reordering (a gap
    is news the sender wants quickly, RFC 9000 §13.2.1), else within ``max_ack_delay_s``; any
    packet that is sent anyway carries one.

    Packets that arrive in order only extend a pending run of numbers, folded into the range
    set when something needs it (an ACK frame, a gap): the common case stays a few additions.
    """

    __slots__ = (
        "_ack_every",
        "_deadline",
        "_eliciting",
        "_immediate",
        "_largest_at",
        "_max_delay",
        "_received",
        "_run_lo",
        "has_unacked",
        "next_in_order",
    )

    def __init__(self, max_ack_delay_s: float, ack_every: int) -> None:
        self._received = RangeSet(max_ranges=MAX_ACK_RANGES_SENT)
        self._max_delay = max_ack_delay_s
        self._ack_every = ack_every
        self._eliciting = 0
        self._immediate = False
        self._deadline: float | None = None
        self._largest_at = 0.0
        self._run_lo = -1  # first number of the in-order run not yet in _received (-1: none)
        self.has_unacked = False
        self.next_in_order = -1  # the number after the highest seen (-1: none seen yet)

    def on_packet(self, pn: int, ack_eliciting: bool, now: float) -> None:
        if pn == self.next_in_order:  # in order: the hot path
            if self._run_lo < 0:
                self._run_lo = pn
            self.next_in_order = pn + 1
            self._largest_at = now
        else:
            self._fold_run()
            received = self._received
            highest = received.highest
            if ack_eliciting and highest is not None:
                self._immediate = True  # reordered, or a gap before it
            received.add(pn, pn)
            if highest is None or pn > highest:
                self._largest_at = now
                self.next_in_order = pn + 1
        if ack_eliciting:
            # Only ack-eliciting packets owe an ACK (RFC 9000 §13.2.1); ACK-only packets are
            # still listed in the next ACK, but never cause one.
            self.has_unacked = True
            self._eliciting += 1
            if self._eliciting >= self._ack_every:
                self._immediate = True
            elif self._deadline is None:
                self._deadline = now + self._max_delay

    def on_eliciting_run(self, first: int, last: int, now: float) -> None:
        """Exactly ``on_packet(pn, True, now)`` for each ``pn`` in ``first..last`` (the bulk
        receiver's consecutive packets, recorded with one call)."""
        if first != self.next_in_order:
            for pn in range(first, last + 1):
                self.on_packet(pn, True, now)
            return
        if self._run_lo < 0:
            self._run_lo = first
        self.next_in_order = last + 1
        self._largest_at = now
        self.has_unacked = True
        if self._deadline is None and self._eliciting + 1 < self._ack_every:
            self._deadline = now + self._max_delay  # as the run's first packet would set it
        self._eliciting += last - first + 1
        if self._eliciting >= self._ack_every:
            self._immediate = True

    def expedite(self) -> None:
        """Make the ACK owed due now (the peer is probing and waits for it)."""
        if self.has_unacked:
            self._immediate = True

    def _fold_run(self) -> None:
        if self._run_lo >= 0:
            self._received.add(self._run_lo, self.next_in_order - 1)
            self._run_lo = -1

    def due(self, now: float) -> bool:
        """True when an ACK must go out now even in a packet of its own."""
        if self._immediate:
            return True
        return self._deadline is not None and now >= self._deadline

    def next_timer(self) -> float | None:
        return self._deadline

    def frame(self, now: float) -> bytes:
        """The ACK frame to send now; the tracker counts everything as acknowledged."""
        self._fold_run()
        delay_us = int(max(0.0, now - self._largest_at) * 1e6)
        frame = encode_ack(self._received.descending(MAX_ACK_RANGES_SENT), delay_us)
        self._eliciting = 0
        self._immediate = False
        self._deadline = None
        self.has_unacked = False
        return frame
