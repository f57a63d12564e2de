"""An adaptive jitter buffer for frames, sans-I/O: the caller passes the time to every call.

Frames carry their sender's timestamp (the time the sender handed them to the transport, on
the sender's clock). The buffer learns the *relative* one-way delay ``d = arrival - sent``
(the clocks may differ by any offset and drift apart), and plays frame ``i`` at

    scheduled_i = sent_i + offset + P

where ``offset`` maps the sender's clock onto ours and ``P`` is the playout delay: the time
from the sender handing the frame over to its release here. ``offset`` is the
drift-compensated minimum of ``d`` (the fastest a frame ever came) minus ``path_delay_s``, the
one-way delay of the empty path, which only the transport knows (half its minimum RTT; 0 when
not given, which makes ``P`` the delay *added* to the fastest frame's).

Modes:

- ``realtime`` (games): a frame is released the moment it arrives, unless a newer one was
  released already, in which case it is dropped: the picture jumps forward and never waits.
- ``fixed:MS`` (SRT-style): ``P`` is MS milliseconds for every frame; a frame that arrives
  after its scheduled time is released at once and counted late.
- ``smooth`` (video): ``P`` follows a high quantile of the recent delay distribution, so that
  about ``late_share`` of the frames miss their time. It grows at once when a frame misses
  its time by more than that quantile allows (a visible stall, counted), and shrinks by at
  most ``max_rate_change`` (seconds of delay per second of play: the playout runs that much
  faster, which no one sees at 2 %).

A frame is **late** when it was not in the buffer at its scheduled time (or, in realtime
mode, when it is dropped). A **stall** is a release that comes more than half a frame
interval later than the sender's spacing of the two frames says; its length is that excess.

Clock drift: the minimum delay is kept per ``bucket_s`` of arrival time; a least-squares line
through the bucket minima of the last ``drift_window_s`` gives the skew (clamped to
``max_skew``), and the base is the lowest bucket minimum projected to now along that line.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from stream.errors import StreamUsageError
from transport.delaytrend import SpikeDetector

__all__ = [
    "FrameDropped",
    "FrameReleased",
    "JitterBuffer",
    "JitterConfig",
    "JitterEvent",
    "JitterMode",
    "JitterStats",
    "Stall",
]

P = TypeVar("P")


ModeKind = Literal["realtime", "smooth", "fixed"]
DropReason = Literal["late", "duplicate", "overflow"]


@dataclass(frozen=True, slots=True)
class JitterMode:
    """How the buffer trades delay against late frames."""

    kind: ModeKind
    fixed_s: float = 0.0
    """The playout delay of ``fixed`` mode, in seconds."""

    @classmethod
    def parse(cls, text: str) -> JitterMode:
        """``realtime``, ``smooth`` or ``fixed:MS`` (milliseconds, >= 0)."""
        if text in ("realtime", "smooth"):
            return cls(text)  # type: ignore[arg-type]
        name, _, value = text.partition(":")
        if name == "fixed" and value:
            try:
                ms = float(value)
            except ValueError:
                ms = math.nan
            if math.isfinite(ms) and 0 <= ms <= 60_000:
                return cls("fixed", ms / 1000)
        raise StreamUsageError(
            f"jitter mode {text!r}: expected realtime, smooth or fixed:MS (0 to 60000 ms)"
        )

    def __str__(self) -> str:
        return f"fixed:{self.fixed_s * 1000:g}" if self.kind == "fixed" else self.kind


@dataclass(frozen=True, slots=True, kw_only=True)
class JitterConfig:
    """Settings of :class:`JitterBuffer`. Times in seconds."""

    late_share: float = 0.005
    """smooth: the share of frames that may miss their time (the delay quantile followed)."""
    margin_s: float = 0.001
    """smooth: added to the quantile."""
    history_s: float = 10.0
    """smooth: how far back the delay distribution is learnt."""
    max_rate_change: float = 0.05
    """smooth: how fast the delay may move on its own, up ahead of a predicted spike and down
    after it or after trouble (5 %: the playout runs up to 5 % slow or fast)."""
    spike_cover: float = 0.75
    """smooth: the share of a periodic spike's delayed frames to wait for (the rest are
    late); the others' extra delay is not carried between spikes."""
    bucket_s: float = 1.0
    drift_window_s: float = 30.0
    max_skew: float = 0.001
    """Clock drift larger than this (1000 ppm) is taken as path change, not drift."""
    max_playout_s: float = 1.0
    """smooth: the playout delay never goes above this: frames later than that are late (a
    link that holds packets for seconds would otherwise leave seconds of standing delay,
    shed at ``max_rate_change``)."""
    max_frames: int = 512
    """Frames held at most; beyond that the oldest is dropped (``overflow``)."""

    def __post_init__(self) -> None:
        if not 0 < self.late_share < 0.5:
            raise StreamUsageError("late_share must be in (0, 0.5)")
        for name in ("margin_s", "max_skew"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise StreamUsageError(f"{name} must be finite and >= 0")
        for name in ("history_s", "bucket_s", "drift_window_s", "max_playout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise StreamUsageError(f"{name} must be finite and > 0")
        if not 0 < self.max_rate_change < 0.5:
            raise StreamUsageError("max_rate_change must be in (0, 0.5)")
        if not 0 < self.spike_cover <= 1:
            raise StreamUsageError("spike_cover must be in (0, 1]")
        if self.max_frames < 2:
            raise StreamUsageError("max_frames must be >= 2")


@dataclass(frozen=True, slots=True)
class FrameReleased(Generic[P]):
    """A frame leaves the buffer: show it. Times on the receiver's clock."""

    index: int
    payload: P
    arrived_s: float
    released_s: float
    scheduled_s: float
    waited_s: float
    """Time in the buffer: release minus arrival."""
    playout_delay_s: float
    """Sender hand-off to release (exact when ``path_delay_s`` is the true empty-path delay)."""
    late: bool


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A frame that will not be shown: it came after a newer one was released (``late``),
    twice (``duplicate``), or the buffer was full (``overflow``)."""

    index: int
    reason: DropReason
    at_s: float


@dataclass(frozen=True, slots=True)
class Stall:
    """The picture froze: a release came ``duration_s`` later than the frames' spacing."""

    started_s: float
    duration_s: float


JitterEvent = FrameReleased[P] | FrameDropped | Stall


@dataclass(frozen=True, slots=True)
class JitterStats:
    mode: str
    frames_released: int
    late_frames: int
    """Released after their time, or dropped as late."""
    dropped: int
    missing: int
    """Skipped over: never arrived before a newer frame was released."""
    stalls: int
    stall_s: float
    playout_delay_s: float | None
    """The current playout delay P (None before the first frame)."""
    skew_ppm: float


@dataclass(slots=True)
class _Frame(Generic[P]):
    index: int
    sent_s: float
    arrived_s: float
    payload: P
    late: bool


class _DelayBase:
    """Drift-compensated minimum of the relative one-way delay."""

    __slots__ = ("_bucket_s", "_buckets", "_current", "_floor", "_max_skew", "_window", "skew")

    _MAX_RESIDUAL_S = 0.002

    def __init__(self, bucket_s: float, window_s: float, max_skew: float) -> None:
        self._bucket_s = bucket_s
        self._window = max(2, round(window_s / bucket_s))
        self._buckets: deque[tuple[float, float]] = deque()  # (bucket start, min delay)
        self._current: tuple[float, float] | None = None
        self._max_skew = max_skew
        self._floor = math.inf  # min over the closed buckets of (delay - skew x start)
        self.skew = 0.0

    def add(self, now: float, delay: float) -> None:
        start = math.floor(now / self._bucket_s) * self._bucket_s
        current = self._current
        if current is None or start > current[0]:
            if current is not None:
                buckets = self._buckets
                buckets.append(current)
                if len(buckets) > self._window:
                    buckets.popleft()
                self._fit()
                skew = self.skew
                self._floor = min(d - skew * t for t, d in buckets)
            self._current = (start, delay)
        elif delay < current[1]:
            self._current = (current[0], delay)

    def _fit(self) -> None:
        buckets = self._buckets
        if len(buckets) < 5:
            self.skew = 0.0
            return
        n = len(buckets)
        t_avg = sum(t for t, _ in buckets) / n
        d_avg = sum(d for _, d in buckets) / n
        den = sum((t - t_avg) ** 2 for t, _ in buckets)
        slope = sum((t - t_avg) * (d - d_avg) for t, d in buckets) / den if den else 0.0
        worst = max(abs(d - d_avg - slope * (t - t_avg)) for t, d in buckets)
        if worst > self._MAX_RESIDUAL_S:
            return  # the minima are not on a line: a path change, not drift; keep the skew
        limit = self._max_skew
        self.skew = min(max(slope, -limit), limit)

    def value(self, now: float) -> float | None:
        """The base delay projected to ``now``: the lowest bucket minimum moved along the
        skew, ``min(delay + skew x (now - start))``."""
        current = self._current
        if current is None:
            return None
        skew = self.skew
        return min(self._floor, current[1] - skew * current[0]) + skew * now


class _SpikePlan:
    """Periodic latency spikes (a Wi-Fi radio scanning once a second) from the frames'
    delays, predicted: the windows of sender time whose frames will come late, and by how
    much. Samples are (sender time on our clock, delay above the base)."""

    __slots__ = ("_cover", "_detector", "_excess", "_last_high_s", "_last_s", "_onsets")

    _GAP_S = 0.2  # a sample above the threshold this long after the last one starts a spike

    def __init__(self, cover: float) -> None:
        self._detector = SpikeDetector()
        self._cover = cover
        self._onsets: deque[float] = deque(maxlen=9)
        self._excess: deque[float] = deque(maxlen=64)  # delays of the samples in spikes
        self._last_high_s = -math.inf
        self._last_s = -math.inf

    def add(self, sent_s: float, excess: float) -> bool:
        """One frame's delay; True if it is part of a spike."""
        if sent_s <= self._last_s:
            return False  # reordered: the detector wants time order
        self._last_s = sent_s
        detector = self._detector
        detector.on_sample(sent_s, excess)
        baseline = detector.baseline_s
        if baseline is None:
            return False
        if excess - baseline <= max(0.005, 4 * detector.spread_s):
            return False
        if sent_s - self._last_high_s > self._GAP_S:
            self._onsets.append(sent_s)
        self._last_high_s = sent_s
        self._excess.append(excess)
        return True

    @property
    def known(self) -> bool:
        return self._detector.spikes is not None and len(self._onsets) >= 4

    def extra_s(self) -> float:
        """The delay to wait for in a spike: ``cover`` of its frames' delays."""
        ordered = sorted(self._excess)
        return ordered[min(len(ordered) - 1, int(self._cover * len(ordered)))]

    def windows(self, around_s: float) -> list[tuple[float, float]]:
        """Sender-time windows of the predicted spikes near ``around_s``."""
        pattern = self._detector.spikes
        if pattern is None or len(self._onsets) < 4:
            return []
        period = pattern.period_s
        onsets = list(self._onsets)
        last = onsets[-1]
        ks = [round((t - last) / period) for t in onsets]
        phase = sum(t - k * period for t, k in zip(onsets, ks, strict=True)) / len(onsets)
        spread = max(abs(t - k * period - phase) for t, k in zip(onsets, ks, strict=True))
        first = math.floor((around_s - phase) / period) - 1
        return [
            (phase + k * period - spread, phase + k * period + spread + pattern.amplitude_s)
            for k in range(first, first + 4)
        ]


class JitterBuffer(Generic[P]):
    """Frames in, frames out at their playout time. Feed :meth:`push` on arrival; call
    :meth:`poll` at :meth:`next_wakeup` (and after each push) for the events."""

    def __init__(
        self,
        mode: JitterMode | str,
        *,
        path_delay_s: float = 0.0,
        config: JitterConfig | None = None,
    ) -> None:
        self.mode = mode if isinstance(mode, JitterMode) else JitterMode.parse(mode)
        self._config = config = config if config is not None else JitterConfig()
        if not (math.isfinite(path_delay_s) and path_delay_s >= 0):
            raise StreamUsageError("path_delay_s must be finite and >= 0")
        self.path_delay_s = path_delay_s
        """The empty path's one-way delay; the transport's min RTT / 2 is a good value."""
        self._base = _DelayBase(config.bucket_s, config.drift_window_s, config.max_skew)
        self._frames: dict[int, _Frame[P]] = {}
        self._next_index = 0  # frames below this were released or skipped
        self._started = False
        # (arrival, delay above base, part of a spike): the delay distribution learnt
        self._excess: deque[tuple[float, float, bool]] = deque()
        self._spikes = _SpikePlan(config.spike_cover)
        self._quantile_s = 0.0
        self._quantile_at = -math.inf
        self._playout_s: float | None = None  # P; None until the first frame
        self._playout_at = 0.0
        self._last_release: tuple[float, float, int] | None = None  # (sent, released, index)
        self._interval_s: float | None = None  # the sender's frame spacing, smoothed
        self._last_sent: tuple[int, float] | None = None
        self._promised: tuple[int, float] | None = None  # (index, time) next_wakeup gave
        self._recent: deque[int] = deque(maxlen=256)  # released indices, for duplicates
        self._recent_set: set[int] = set()
        self._events: list[JitterEvent[P]] = []
        self._released = self._late = self._dropped = self._missing = 0
        self._stalls = 0
        self._stall_s = 0.0

    # -- input -----------------------------------------------------------------------------------

    def push(self, index: int, sent_s: float, now: float, payload: P) -> None:
        """Frame ``index`` (consecutive from the sender's first) sent at ``sent_s`` on the
        sender's clock has arrived at ``now``."""
        if not (math.isfinite(sent_s) and math.isfinite(now)) or index < 0:
            raise StreamUsageError("push needs finite times and an index >= 0")
        if not self._started:
            self._started = True
            self._next_index = index
        if index in self._frames or index in self._recent_set:
            self._drop(index, "duplicate", now, late=False)
            return
        if index < self._next_index:
            self._drop(index, "late", now, late=True)
            return
        delay = now - sent_s
        self._base.add(now, delay)
        self._learn_interval(index, sent_s)
        base = self._base.value(now)
        assert base is not None
        excess = delay - base
        offset = base - self.path_delay_s
        smooth = self.mode.kind == "smooth"
        planned = False
        if smooth:
            spike = self._spikes.add(sent_s + offset, excess)
            self._excess.append((now, excess, spike))
            planned = any(w0 <= sent_s + offset <= w1 for w0, w1 in self._windows(now))
        self._advance(now)
        playout = self._playout(now)
        late = self.mode.kind != "realtime" and now > sent_s + offset + playout + 1e-9
        if late and smooth and not planned and excess > self._target(now):
            # Trouble that neither the distribution nor a predicted spike explains: grow at
            # once to cover it.
            self._playout_s = min(
                excess + self.path_delay_s + self._config.margin_s, self._config.max_playout_s
            )
        self._frames[index] = _Frame(index, sent_s, now, payload, late)
        if len(self._frames) > self._config.max_frames:
            oldest = min(self._frames)
            del self._frames[oldest]
            self._drop(oldest, "overflow", now, late=False)
            self._next_index = max(self._next_index, oldest + 1)

    # -- output ----------------------------------------------------------------------------------

    def poll(self, now: float) -> list[JitterEvent[P]]:
        """Release what is due at ``now``; every event since the last call."""
        self._advance(now)
        frames = self._frames
        while frames:
            index = min(frames)
            frame = frames[index]
            scheduled = self._scheduled(frame, now)
            promised = self._promised
            if (
                self.mode.kind != "realtime"
                and now < scheduled - 1e-9
                and not (promised is not None and promised[0] == index and now >= promised[1])
            ):
                break  # a wake-up from next_wakeup releases its frame even if P moved since
            del frames[index]
            self._release(frame, now, scheduled)
        events, self._events = self._events, []
        return events

    def next_wakeup(self, now: float) -> float | None:
        """When :meth:`poll` will next have a frame to release (``<= now``: at once)."""
        if not self._frames:
            return None
        frame = self._frames[min(self._frames)]
        if self.mode.kind == "realtime":
            return now
        scheduled = self._scheduled(frame, now)
        if scheduled <= now:
            return now
        # The schedule moves while we wait: P ramps, and the offset follows the clock skew.
        # Solve t = scheduled(now) + rate (t - now).
        rate = self._rate(now) + self._base.skew
        due = (scheduled - rate * now) / (1 - rate) if rate > 0 else scheduled
        self._promised = (frame.index, due)
        return due

    def stats(self, now: float) -> JitterStats:
        playout: float | None = None
        if self.mode.kind == "fixed":
            playout = self.mode.fixed_s
        elif self.mode.kind == "smooth" and self._playout_s is not None:
            self._advance(now)
            playout = self._playout_s
        return JitterStats(
            mode=str(self.mode),
            frames_released=self._released,
            late_frames=self._late,
            dropped=self._dropped,
            missing=self._missing,
            stalls=self._stalls,
            stall_s=self._stall_s,
            playout_delay_s=playout,
            skew_ppm=self._base.skew * 1e6,
        )

    @property
    def buffered(self) -> int:
        return len(self._frames)

    # -- the schedule ----------------------------------------------------------------------------

    def _offset(self, now: float) -> float:
        base = self._base.value(now)
        return (0.0 if base is None else base) - self.path_delay_s

    def _playout(self, now: float) -> float:
        mode = self.mode
        if mode.kind == "fixed":
            return mode.fixed_s
        if mode.kind == "realtime":
            return 0.0
        if self._playout_s is None:
            self._playout_s = self._target(now)
            self._playout_at = now
        return self._playout_s

    def _scheduled(self, frame: _Frame[P], now: float) -> float:
        if self.mode.kind == "realtime":
            return frame.arrived_s
        return frame.sent_s + self._offset(now) + self._playout(now)

    def _windows(self, now: float) -> list[tuple[float, float]]:
        playout = self._playout_s if self._playout_s is not None else 0.0
        return self._spikes.windows(now - playout)

    def _target(self, now: float) -> float:
        """smooth: the playout delay the recent delays ask for, raised ahead of and through
        each predicted spike (ramps at ``max_rate_change``, so the playout only slows), never
        above ``max_playout_s``."""
        return min(self._plan(now, self._base_target(now)), self._config.max_playout_s)

    def _plan(self, now: float, low: float) -> float:
        """``low`` raised for the predicted spikes around ``now``."""
        if not self._spikes.known:
            return low
        high = low + self._spikes.extra_s()
        rate = self._config.max_rate_change
        target = low
        for w0, w1 in self._windows(now):
            start, end = w0 + high, w1 + high  # when the window's frames play
            distance = start - now if now < start else (now - end if now > end else 0.0)
            target = max(target, high - rate * distance)
        return target

    def _base_target(self, now: float) -> float:
        config = self._config
        if now - self._quantile_at >= 0.1 or now < self._quantile_at:
            excess = self._excess
            while excess and excess[0][0] < now - config.history_s:
                excess.popleft()
            known = self._spikes.known  # then the plan covers the spikes: leave them out
            ordered = sorted(x for _, x, spike in excess if not (known and spike))
            if ordered:
                rank = min(len(ordered) - 1, math.ceil((1 - config.late_share) * len(ordered)))
                self._quantile_s = max(0.0, ordered[rank])
            self._quantile_at = now
        return self._quantile_s + self.path_delay_s + config.margin_s

    def _rate(self, now: float) -> float:
        """dP/dt now (smooth): up with a ramp towards a predicted spike, down at
        ``max_rate_change`` while above the target, else 0."""
        if self.mode.kind != "smooth" or self._playout_s is None:
            return 0.0
        target = self._target(now)
        if target < self._playout_s:
            return -self._config.max_rate_change
        return max(0.0, (self._target(now + 0.001) - target) / 0.001)

    def _advance(self, now: float) -> None:
        """smooth: move P towards the target: up at once, down at ``max_rate_change``."""
        if self.mode.kind != "smooth" or self._playout_s is None:
            return
        dt = now - self._playout_at
        if dt <= 0:
            return
        self._playout_at = now
        target = self._target(now)
        if target >= self._playout_s:
            self._playout_s = target
        else:
            self._playout_s = max(target, self._playout_s - self._config.max_rate_change * dt)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _learn_interval(self, index: int, sent_s: float) -> None:
        last = self._last_sent
        if last is not None and index > last[0]:
            spacing = (sent_s - last[1]) / (index - last[0])
            if spacing > 0:
                old = self._interval_s
                self._interval_s = spacing if old is None else old + (spacing - old) / 16
        if last is None or index > last[0]:
            self._last_sent = (index, sent_s)

    def _release(self, frame: _Frame[P], now: float, scheduled: float) -> None:
        skipped = frame.index - self._next_index
        if skipped > 0:
            self._missing += skipped
        self._next_index = frame.index + 1
        previous = self._last_release
        interval = self._interval_s
        if previous is not None and interval is not None:
            # The picture should change every frame spacing; longer is a freeze, whether
            # the next frame came late or frames in between never came.
            spacing = (frame.sent_s - previous[0]) / max(1, frame.index - previous[2])
            excess = (now - previous[1]) - spacing
            if excess > interval / 2:
                self._stalls += 1
                self._stall_s += excess
                self._events.append(Stall(started_s=now - excess, duration_s=excess))
        self._last_release = (frame.sent_s, now, frame.index)
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._recent_set.discard(recent[0])
        recent.append(frame.index)
        self._recent_set.add(frame.index)
        self._released += 1
        if frame.late:
            self._late += 1
        self._events.append(
            FrameReleased(
                index=frame.index,
                payload=frame.payload,
                arrived_s=frame.arrived_s,
                released_s=now,
                scheduled_s=scheduled,
                waited_s=now - frame.arrived_s,
                playout_delay_s=now - frame.sent_s - self._offset(now),
                late=frame.late,
            )
        )

    def _drop(self, index: int, reason: DropReason, now: float, *, late: bool) -> None:
        self._dropped += 1
        if late:
            self._late += 1
            if self._missing > 0:
                self._missing -= 1  # it was counted missing when skipped; it is late instead
        self._events.append(FrameDropped(index=index, reason=reason, at_s=now))
