"""A sorted set of disjoint inclusive integer ranges: received packet numbers, received bytes."""

from __future__ import annotations

from bisect import bisect_left


class RangeSet:
    """Disjoint, non-adjacent inclusive ranges in ascending order.

    With ``max_ranges`` set, the lowest ranges are forgotten beyond that count, which bounds the
    memory an adversarial pattern (every other number) can take.
    """

    __slots__ = ("_max", "_ranges")

    def __init__(self, max_ranges: int | None = None) -> None:
        self._ranges: list[tuple[int, int]] = []
        self._max = max_ranges

    def add(self, lo: int, hi: int) -> None:
        """Add ``[lo, hi]``, merging with neighbours."""
        ranges = self._ranges
        if ranges:
            last_lo, last_hi = ranges[-1]
            if lo > last_hi + 1:  # the common case: in order, after a gap
                ranges.append((lo, hi))
                self._trim()
                return
            if lo >= last_lo:  # extends or lies inside the last range
                if hi > last_hi:
                    ranges[-1] = (last_lo, hi)
                return
        else:
            ranges.append((lo, hi))
            return
        i = bisect_left(ranges, (lo, lo))
        if i > 0 and ranges[i - 1][1] + 1 >= lo:
            i -= 1
        j = i
        new_lo, new_hi = lo, hi
        while j < len(ranges) and ranges[j][0] <= new_hi + 1:
            new_lo = min(new_lo, ranges[j][0])
            new_hi = max(new_hi, ranges[j][1])
            j += 1
        ranges[i:j] = [(new_lo, new_hi)]
        self._trim()

    def add_new(self, lo: int, hi: int) -> bool:
        """Add ``[lo, hi]``; return False (and change nothing) if it was all present."""
        ranges = self._ranges
        if ranges:
            last_lo, last_hi = ranges[-1]
            if lo == last_hi + 1:  # in order, right after the last range: the bulk case
                ranges[-1] = (last_lo, hi)
                return True
        if self.covers(lo, hi):
            return False
        self.add(lo, hi)
        return True

    def _trim(self) -> None:
        if self._max is not None and len(self._ranges) > self._max:
            del self._ranges[: len(self._ranges) - self._max]

    def __contains__(self, value: int) -> bool:
        ranges = self._ranges
        i = bisect_left(ranges, (value, value))
        if i < len(ranges) and ranges[i][0] == value:
            return True
        return i > 0 and ranges[i - 1][1] >= value

    def __len__(self) -> int:
        """Number of ranges (not of values)."""
        return len(self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def ascending(self) -> list[tuple[int, int]]:
        return list(self._ranges)

    def descending(self, limit: int) -> list[tuple[int, int]]:
        """The ``limit`` highest ranges, highest first (the order ACK frames use)."""
        return self._ranges[: -limit - 1 : -1] if limit else []

    def covers(self, lo: int, hi: int) -> bool:
        """True when ``[lo, hi]`` lies inside one range."""
        ranges = self._ranges
        i = bisect_left(ranges, (lo + 1, lo + 1)) - 1
        return i >= 0 and ranges[i][0] <= lo and ranges[i][1] >= hi

    @property
    def lowest(self) -> int:
        """The lowest value held (the set must not be empty)."""
        return self._ranges[0][0]

    def pop_lowest(self) -> int:
        """Remove the lowest range; return its upper end."""
        return self._ranges.pop(0)[1]

    @property
    def highest(self) -> int | None:
        return self._ranges[-1][1] if self._ranges else None
