"""Forward error correction of messages (PROTOCOL.md §4.10, §8.10): which fragments form a
group, how many parity shards a group gets, and rebuilding lost fragments on the receiving
side. Pure: the Reed-Solomon arithmetic is :mod:`transport.fec`; times are arguments.

Two kinds of group:

* **within a message** (keyframes, anything of two pieces or more): consecutive pieces of one
  message, the last one zero-padded to the piece size. A message of ``n`` pieces is cut into
  ``ceil(n / MAX_GROUP_PIECES)`` groups of near-equal size, and a group's parity leaves right
  after its last piece. Reed-Solomon is MDS: any ``m`` losses in a group are repaired wherever
  they fall, so a long group absorbs a burst that would sink several short ones ("lengthen
  groups" rather than interleave: interleaving would hold every parity back to the end).
* **across messages** (game messages, small frames: one piece each): up to
  ``MAX_ACROSS_MEMBERS`` consecutive one-piece messages of a channel. A member's shard is
  ``varint(length) || data``, zero-padded to the longest, so a rebuilt shard says how long its
  message is. The group closes when it is full or when its first member's deadline leaves only
  the time the parity needs to arrive.

How many parity shards (:func:`parity_count`): the fewest ``m`` for which more than ``m``
losses among the ``k + m`` shards is less likely than ``RESIDUAL_TARGET``, under a
Gilbert-Elliott model with the sender's measured loss rate and mean burst length (so bursty
loss asks for more parity than the same rate spread out). :class:`ParityBudget` then caps the
parity at ``fec_max_overhead`` of the data bytes, on average (a fraction of a shard left over
from one group carries to the next, at most one shard's worth).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np

from transport import fec
from transport.config import SessionConfig
from transport.errors import DecodeError
from transport.reassembly import ACCEPTED, VIOLATION, Reassembler
from transport.stats import Counters
from transport.wire import ParityFrame, encode_varint, read_varint

RESIDUAL_TARGET = 0.01
"""Probability, under the measured loss model, that a group loses more shards than its
parity repairs and nothing else saves it (at 5 % random loss, with parity alone, a 7-piece
frame asks for 2 parity shards, a 53-piece keyframe for 8). See :func:`residual_target` for
how NACK repair relaxes it."""
MAX_GROUP_PIECES = 64
"""Pieces in one group within a message: a 300 KB keyframe (256 pieces) is 4 groups. Longer
groups cost less parity for the same residual loss; decoding a (64, 8) group takes ~1 ms."""
MAX_PARITY_SHARDS = 32
"""Parity shards of one group, whatever the model asks (a 64-piece group at 30 % loss)."""
MAX_ACROSS_MEMBERS = 16
"""One-piece messages in one group across messages."""
ACROSS_STEP_LIMIT = 64
"""An across group holds ids at most this far apart (each step is then a 1-byte varint)."""
MAX_HELD_PARITY_BYTES = 4 * 1024 * 1024
"""Receiver: parity shards kept while their group waits for more shards (oldest dropped)."""


def across_header_max(k: int) -> int:
    """Upper bound of a PARITY header across ``k`` messages, before the shard (§4.10):
    type, flags, channel, an 8-byte id, a 4-byte lifetime, k/m/index, the 1-byte steps,
    an 8-byte length."""
    return 3 + 8 + 4 + 3 + (k - 1) + 8


# -- how much parity ----------------------------------------------------------------------------


def residual_target(loss_pct: float, repair_rounds: int) -> float:
    """How likely a group may be to lose more than its parity repairs, given that
    ``repair_rounds`` NACK rounds still fit before the deadline: a lost piece stays lost after
    a round when the NACK or the repair is lost (``q = 1 - (1 - p)^2``), so the group may fail
    with ``RESIDUAL_TARGET / q^rounds``. At 1 % loss with one round that is 50 % (a 7-piece
    frame gets no parity: NACK alone delivers it), at 5 % 10 % (one parity shard); with three
    rounds parity is not needed at all."""
    if repair_rounds < 1 or loss_pct <= 0:
        return RESIDUAL_TARGET
    p = min(loss_pct / 100, 0.5)
    q = 1.0 - (1.0 - p) ** 2
    return min(1.0, RESIDUAL_TARGET / q**repair_rounds)


def parity_count(k: int, loss_pct: float, burst: float, target: float = RESIDUAL_TARGET) -> int:
    """Parity shards a group of ``k`` data shards needs at ``loss_pct`` % loss in bursts of
    ``burst`` packets on average so that it fails with probability at most ``target``, before
    the overhead cap (0 when there is no loss)."""
    if k < 1 or loss_pct <= 0 or target >= 1.0:
        return 0
    permille = min(500, max(1, round(loss_pct * 10)))  # 0.1 % steps: a small cache
    quarters = min(64, max(4, round(burst * 4)))  # bursts in quarter packets, 1..16
    target = float(f"{target:.2g}")  # two significant digits, for the cache too
    return _parity_needed(min(k, fec.MAX_SHARDS - 1), permille, quarters, target)


@lru_cache(maxsize=2048)
def _parity_needed(k: int, permille: int, quarters: int, target: float) -> int:
    p = permille / 1000
    burst = quarters / 4
    limit = min(MAX_PARITY_SHARDS, fec.MAX_SHARDS - k)
    # Gilbert-Elliott: a bad state that loses everything, left with r = 1 / burst per packet,
    # entered with q so that the stationary loss is p (r = 1 - p, q = p: independent losses,
    # whose mean run is 1 / (1 - p)). Track the distribution of the number of losses over n
    # packets, by the state the last packet left the chain in.
    r = min(1.0 / burst, 1.0 - p)
    q = p * r / (1.0 - p)
    n_max = k + limit
    good = np.zeros(n_max + 2)
    bad = np.zeros(n_max + 2)
    good[0] = 1.0 - p
    bad[1] = p
    for n in range(1, n_max + 1):
        if n >= k:
            m = n - k
            tail = float(good[m + 1 :].sum() + bad[m + 1 :].sum())
            if tail <= target:
                return m
        stay_good = good * (1.0 - q) + bad * r
        go_bad = good * q + bad * (1.0 - r)
        good = stay_good
        bad = np.concatenate(([0.0], go_bad[:-1]))  # a packet in the bad state is lost
    return limit


class ParityBudget:
    """Keeps parity bytes at most ``max_overhead`` of the data bytes they protect, on average."""

    __slots__ = ("_credit", "_ratio")

    def __init__(self, max_overhead: float) -> None:
        self._ratio = max_overhead
        self._credit = 0.0  # parity bytes earned and not spent, at most one shard carried

    def grant(self, wanted: int, shard_bytes: int, data_bytes: int) -> int:
        """How many of ``wanted`` parity shards of ``shard_bytes`` a group of ``data_bytes``
        may have; the ones granted are spent."""
        credit = min(self._credit, shard_bytes) + self._ratio * data_bytes
        granted = min(wanted, int(credit // shard_bytes))
        self._credit = credit - granted * shard_bytes
        return granted


def group_ends(pieces: int) -> tuple[int, ...]:
    """Where the groups of a message of ``pieces`` pieces end (exclusive piece indices): at
    most MAX_GROUP_PIECES each, sizes within one of each other."""
    count = -(-pieces // MAX_GROUP_PIECES)
    base, extra = divmod(pieces, count)
    ends = []
    end = 0
    for g in range(count):
        end += base + (1 if g < extra else 0)
        ends.append(end)
    return tuple(ends)


def across_shard(data: bytes) -> bytes:
    """A one-piece message as a shard of a group across messages: its length, then it."""
    return encode_varint(len(data)) + data


def across_data(shard: bytes) -> bytes | None:
    """The message inside a (zero-padded) shard, or None if the shard is not one."""
    try:
        length, pos = read_varint(shard, 0)
    except DecodeError:
        return None
    if pos + length > len(shard):
        return None
    return shard[pos : pos + length]


def pad(shards: list[bytes], size: int) -> list[bytes]:
    return [s if len(s) == size else s + bytes(size - len(s)) for s in shards]


class AcrossGroup:
    """Sender: the open group across one-piece messages of one channel."""

    __slots__ = (
        "channel",
        "close_at",
        "deadline",
        "kind",
        "members",
        "opened_at",
        "shards",
        "size",
    )

    def __init__(
        self, channel: int, kind: int, deadline: float, close_at: float, opened_at: float
    ) -> None:
        self.channel = channel
        self.kind = kind
        self.deadline = deadline  # the first member's: the earliest
        self.close_at = close_at
        self.opened_at = opened_at  # when the first member left
        self.members: list[int] = []
        self.shards: list[bytes] = []
        self.size = 0  # the longest shard

    def add(self, message_id: int, data: bytes) -> None:
        shard = across_shard(data)
        self.members.append(message_id)
        self.shards.append(shard)
        self.size = max(self.size, len(shard))

    def fits(self, message_id: int) -> bool:
        """Whether ``message_id`` may join (a full group, or a step too long, closes it)."""
        return (
            len(self.members) < MAX_ACROSS_MEMBERS
            and 0 < message_id - self.members[-1] < ACROSS_STEP_LIMIT
        )


# -- the receiving side ---------------------------------------------------------------------------


class _Group:
    """Receiver: the parity shards of one group, waiting for enough shards to rebuild."""

    __slots__ = ("expires", "frame", "held", "parity")

    def __init__(self, frame: ParityFrame, expires: float) -> None:
        self.frame = frame  # the first PARITY of the group: its description
        self.expires = expires
        self.parity: dict[int, bytes] = {}  # shard index (k + parity index) -> shard
        self.held = 0


class ParityDecoder:
    """Receiver: keeps parity shards per group and rebuilds lost fragments as soon as ``k`` of
    a group's ``k + m`` shards are at hand, feeding them to the reassembler as if they had
    arrived. Groups are dropped once rebuilt, once nothing in them is missing, when their
    lifetime passes, or (oldest first) beyond ``MAX_HELD_PARITY_BYTES``."""

    def __init__(self, config: SessionConfig, reassembler: Reassembler, counters: Counters) -> None:
        self._timeout_s = config.reassembly_timeout_s
        self._reassembler = reassembler
        self._counters = counters
        self.groups: dict[tuple[int, int, int, bool], _Group] = {}
        """Groups waiting for shards, oldest first."""
        self.held_bytes = 0

    @property
    def pending(self) -> bool:
        return bool(self.groups)

    def on_parity(self, frame: ParityFrame, now: float) -> int:
        """Take a PARITY frame; return ACCEPTED, or VIOLATION when it contradicts the
        fragments of its message."""
        key = (frame.channel, frame.message_id, frame.first_offset, frame.across)
        group = self.groups.get(key)
        if group is None:
            if self._finished(frame):
                return ACCEPTED  # nothing of it is missing any more
            partial = self._reassembler.partial(frame.channel, frame.message_id)
            if not frame.across and partial is not None and partial.total != frame.total_len:
                return VIOLATION
            lifetime = frame.lifetime_us / 1e6 if frame.lifetime_us is not None else None
            expires = now + (lifetime if lifetime is not None else self._timeout_s)
            group = self.groups[key] = _Group(frame, expires)
        elif not _same_group(group.frame, frame):
            return ACCEPTED  # an inconsistent peer: keep the first description
        index = frame.k + frame.index
        if index in group.parity:
            return ACCEPTED
        group.parity[index] = frame.data
        group.held += len(frame.data)
        self.held_bytes += len(frame.data)
        while self.held_bytes > MAX_HELD_PARITY_BYTES and len(self.groups) > 1:
            oldest = next(iter(self.groups))
            self._drop(oldest)
        return self._try(key, group, now)

    def retry(self, now: float) -> int:
        """Try every waiting group again (fragments arrived since); VIOLATION or ACCEPTED."""
        for key, group in list(self.groups.items()):
            if self._try(key, group, now) == VIOLATION:
                return VIOLATION
        return ACCEPTED

    def next_timer(self) -> float | None:
        groups = self.groups
        return next(iter(groups.values())).expires if groups else None

    def handle_timer(self, now: float) -> None:
        groups = self.groups
        while groups:
            key, group = next(iter(groups.items()))
            if group.expires > now:
                return
            self._drop(key)

    # -- internals -----------------------------------------------------------------------

    def _finished(self, frame: ParityFrame) -> bool:
        finished = self._reassembler.finished
        if frame.across:
            return all(finished(frame.channel, mid) for mid in frame.members)
        return finished(frame.channel, frame.message_id)

    def _drop(self, key: tuple[int, int, int, bool]) -> None:
        group = self.groups.pop(key)
        self.held_bytes -= group.held

    def _try(self, key: tuple[int, int, int, bool], group: _Group, now: float) -> int:
        frame = group.frame
        if frame.across:
            present, missing = self._across_shards(frame)
        else:
            present, missing = self._intra_shards(frame)
        if not missing:
            self._drop(key)
            return ACCEPTED
        if len(present) + len(group.parity) < frame.k:
            return ACCEPTED  # not yet
        self._drop(key)
        received: Mapping[int, bytes] = {**present, **group.parity}
        data = fec.decode(received, frame.k, frame.m, len(frame.data))
        if frame.across:
            return self._rebuild_across(frame, data, missing, now)
        return self._rebuild_intra(frame, data, missing, now)

    def _intra_shards(self, frame: ParityFrame) -> tuple[dict[int, bytes], list[int]]:
        size = len(frame.data)
        partial = self._reassembler.partial(frame.channel, frame.message_id)
        if partial is None and self._reassembler.finished(frame.channel, frame.message_id):
            return {}, []
        present: dict[int, bytes] = {}
        missing: list[int] = []
        for j in range(frame.k):
            lo = frame.first_offset + j * size
            hi = min(lo + size, frame.total_len)
            if partial is not None and partial.holds(lo, hi):
                piece = bytes(partial.buf[lo:hi])
                present[j] = piece if hi - lo == size else piece + bytes(size - (hi - lo))
            else:
                missing.append(j)
        return present, missing

    def _across_shards(self, frame: ParityFrame) -> tuple[dict[int, bytes], list[int]]:
        size = len(frame.data)
        recent = self._reassembler.recent
        finished = self._reassembler.finished
        present: dict[int, bytes] = {}
        missing: list[int] = []
        lost = 0
        for j, mid in enumerate(frame.members):
            data = recent.get((frame.channel, mid))
            shard = across_shard(data) if data is not None else None
            if shard is not None and len(shard) <= size:
                present[j] = shard + bytes(size - len(shard))
            else:
                missing.append(j)
                if not finished(frame.channel, mid):
                    lost += 1
        return present, missing if lost else []

    def _rebuild_intra(
        self, frame: ParityFrame, data: list[bytes], missing: list[int], now: float
    ) -> int:
        size = len(frame.data)
        on_piece = self._reassembler.on_piece
        for j in missing:
            lo = frame.first_offset + j * size
            hi = min(lo + size, frame.total_len)
            piece = data[j][: hi - lo]
            status = on_piece(
                frame.kind,
                frame.channel,
                frame.message_id,
                frame.total_len,
                lo,
                frame.lifetime_us,
                piece,
                now,
            )
            if status == VIOLATION:
                return VIOLATION
            self._counters.fec_recovered += 1
        return ACCEPTED

    def _rebuild_across(
        self, frame: ParityFrame, data: list[bytes], missing: list[int], now: float
    ) -> int:
        finished = self._reassembler.finished
        on_piece = self._reassembler.on_piece
        for j in missing:
            mid = frame.members[j]
            if finished(frame.channel, mid):
                continue
            message = across_data(data[j])
            if message is None:
                self._counters.decode_failures += 1  # the peer's parity does not add up
                return ACCEPTED
            status = on_piece(
                frame.kind, frame.channel, mid, len(message), 0, frame.lifetime_us, message, now
            )
            if status == VIOLATION:
                return VIOLATION
            self._counters.fec_recovered += 1
        return ACCEPTED


def _same_group(a: ParityFrame, b: ParityFrame) -> bool:
    return (
        a.kind == b.kind
        and a.k == b.k
        and a.m == b.m
        and a.total_len == b.total_len
        and a.members == b.members
        and len(a.data) == len(b.data)
    )
