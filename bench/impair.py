"""The impairment model: what one direction of a bad link does to each datagram.

One model, two drivers: the in-process simulated link (:mod:`bench.simlink`, virtual clock)
and the real UDP relay (:mod:`bench.relay`, ``framewire impair``) both ask an
:class:`Impairment` the same question: *this datagram of this size entered the link at this
time; when does it come out, if at all?* The answer is a list of delivery times: empty
(dropped), one, or two (duplicated).

What a datagram goes through, in order:

1. **Blackouts and loss**, decided when it enters: a blackout window drops everything; random
   loss drops with a fixed probability; the Gilbert-Elliott chain (a good and a bad state,
   one transition per datagram) drops in bursts.
2. **The bottleneck queue**: a FIFO served at ``rate_bps``, or by a recorded trace (a
   Mahimahi delivery-opportunity trace, or a throughput schedule), holding at most
   ``queue_packets`` datagrams; a full queue drops the newcomer (tail drop). Excess traffic
   thus turns into queueing delay first and loss second, as on a real bottleneck.
3. **Propagation**: the fixed delay, a jitter sample (zero mean, standard deviation
   ``jitter_s``: uniform, normal, or a heavy-tailed Pareto), a periodic latency spike if one
   is in progress, a delay trace's value, and for a ``reorder`` fraction of datagrams an extra
   hold-back so that later ones overtake them.

Deterministic for a seed: every datagram draws the same seven random numbers from the
model's own stream whatever the settings (so switching one impairment on does not reshuffle
the others), and spike onsets come from a stream of their own indexed by spike number. Feed
the same sizes at the same times and the answers are the same, which is what lets the
simulated link and the relay be compared packet for packet.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from bench.traces import Trace

JitterShape = Literal["uniform", "normal", "pareto"]
JITTER_SHAPES: tuple[JitterShape, ...] = ("uniform", "normal", "pareto")
PARETO_SHAPE = 2.5
"""The tail index of Pareto jitter: heavy-tailed yet with a finite variance (it needs > 2),
so ``jitter_s`` can still be its standard deviation."""
IPV4_UDP_OVERHEAD_BYTES = 28
"""What a datagram adds on the wire over its payload (IPv4 20 + UDP 8): the queue serves
whole packets, so rates and Mahimahi's 1500-byte opportunities count these bytes too."""
_UNIT = NormalDist()
_TINY = 1e-12


def _require_finite(what: str, name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{what}: {name} must be a finite number, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GilbertElliott:
    """Bursty loss: a two-state Markov chain stepped once per datagram (Gilbert-Elliott).

    In the good state a datagram is lost with ``loss_good``, in the bad one with
    ``loss_bad``. With the defaults (all lost in bad, none in good) the mean loss is
    ``p / (p + r)`` and a burst lasts ``1 / r`` datagrams on average.
    """

    p_good_to_bad: float
    p_bad_to_good: float
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_good_to_bad", "p_bad_to_good", "loss_bad", "loss_good"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"burst loss: {name} must be within 0..1")
        if self.p_bad_to_good == 0.0 and self.p_good_to_bad > 0.0:
            raise ValueError("burst loss: the bad state must be left (p_bad_to_good > 0)")

    @classmethod
    def from_loss(cls, loss: float, mean_burst: float) -> GilbertElliott:
        """The chain with mean loss ``loss`` (0..1) in bursts of ``mean_burst`` datagrams."""
        if not 0.0 <= loss < 1.0:
            raise ValueError("burst loss: the loss rate must be within 0..1 (excluding 1)")
        if not mean_burst >= 1.0:  # also refuses NaN
            raise ValueError("burst loss: a burst is at least one datagram long")
        r = 1.0 / mean_burst
        return cls(p_good_to_bad=loss * r / (1.0 - loss), p_bad_to_good=r)

    @property
    def mean_loss(self) -> float:
        p, r = self.p_good_to_bad, self.p_bad_to_good
        bad = p / (p + r) if p + r > 0 else 0.0
        return bad * self.loss_bad + (1.0 - bad) * self.loss_good


@dataclass(frozen=True, slots=True, kw_only=True)
class Spikes:
    """Periodic latency spikes, e.g. a Wi-Fi radio leaving its channel to scan.

    Spike ``k`` starts at ``offset_s + k * period_s`` moved by up to ``±phase_jitter_s``. A
    datagram leaving the queue ``x`` seconds into a spike waits ``amplitude_s * (1 - x /
    duration_s)`` extra: the delay jumps by the amplitude and drains to nothing by the end.
    With ``duration_s == amplitude_s`` that is a stall: everything sent during it comes out
    together when it ends. A spike cannot be shorter than its amplitude, because a stalled
    link releases its backlog in order.
    """

    amplitude_s: float
    duration_s: float
    period_s: float
    phase_jitter_s: float = 0.0
    offset_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("amplitude_s", "duration_s", "period_s", "phase_jitter_s", "offset_s"):
            _require_finite("spikes", name, getattr(self, name))
        if self.amplitude_s < 0 or self.phase_jitter_s < 0 or self.offset_s < 0:
            raise ValueError("spikes: amplitude, phase jitter and offset must not be negative")
        if self.duration_s < self.amplitude_s:
            raise ValueError(
                "spikes: the duration must be at least the amplitude (a stalled link "
                "releases its backlog in order, so a 40 ms stall lasts at least 40 ms)"
            )
        if self.period_s <= self.duration_s + 2 * self.phase_jitter_s:
            raise ValueError("spikes: the period must exceed duration + 2 x phase jitter")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """The impairments of one direction. Times in seconds, probabilities 0..1."""

    delay_s: float = 0.0
    """Fixed one-way propagation delay."""
    jitter_s: float = 0.0
    """Standard deviation of the zero-mean jitter added to every datagram."""
    jitter_shape: JitterShape = "normal"
    jitter_keeps_order: bool = False
    """False (as netem): each datagram draws its own jitter and may overtake earlier ones.
    True: jitter behaves like queueing, never reordering (the reorder option still does)."""
    loss: float = 0.0
    """Random (independent) loss."""
    burst: GilbertElliott | None = None
    """Bursty loss, on top of the random loss."""
    reorder: float = 0.0
    """The fraction of datagrams held back by ``reorder_delay_s`` so later ones overtake."""
    reorder_delay_s: float = 0.005
    duplicate: float = 0.0
    """The fraction of datagrams delivered twice (the copy draws its own jitter)."""
    rate_bps: float | None = None
    """Bottleneck rate in bit/s (wire bytes, see IPV4_UDP_OVERHEAD_BYTES); None: unlimited."""
    queue_packets: int | None = None
    """Datagrams the bottleneck queue holds (tail drop beyond); None: unbounded."""
    spikes: Spikes | None = None
    trace: Trace | None = None
    """A recorded trace: delivery opportunities or a rate schedule replace ``rate_bps``; a
    delay trace adds its value to the delay."""
    blackouts: tuple[tuple[float, float], ...] = ()
    """Windows ``[start_s, end_s)`` of total loss, by entry time."""

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:  # also refuses NaN
                raise ValueError(f"{name} must be within 0..1")
        for name in ("delay_s", "jitter_s", "reorder_delay_s"):
            _require_finite("link", name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.rate_bps is not None:
            _require_finite("link", "rate_bps", self.rate_bps)
        if self.jitter_shape not in JITTER_SHAPES:
            raise ValueError(f"jitter shape must be one of {', '.join(JITTER_SHAPES)}")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError("rate_bps must be positive (None for unlimited)")
        if self.queue_packets is not None and self.queue_packets < 1:
            raise ValueError("queue_packets must be at least 1 (None for unbounded)")
        for start, end in self.blackouts:
            if not end >= start:  # also refuses NaN
                raise ValueError("a blackout must not end before it starts")
        paced = self.rate_bps is not None or (self.trace is not None and self.trace.kind != "delay")
        if self.queue_packets is not None and not paced:
            raise ValueError("queue_packets needs rate_bps or a rate/opportunity trace")

    def blackout(self, start_s: float, end_s: float) -> LinkConfig:
        """This link with a window of total loss added."""
        return replace(self, blackouts=(*self.blackouts, (start_s, end_s)))

    @property
    def is_clean(self) -> bool:
        """Nothing to do: a driver may pass datagrams straight through."""
        return self == LinkConfig()


@dataclass(slots=True)
class LinkCounters:
    """What one direction did so far."""

    datagrams_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    """Deliveries, duplicates included."""
    lost_random: int = 0
    lost_burst: int = 0
    lost_blackout: int = 0
    dropped_queue: int = 0
    duplicated: int = 0
    reordered: int = 0
    queue_peak: int = 0

    @property
    def dropped(self) -> int:
        return self.lost_random + self.lost_burst + self.lost_blackout + self.dropped_queue

    def as_dict(self) -> dict[str, int]:
        return {
            "datagrams_in": self.datagrams_in,
            "bytes_in": self.bytes_in,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "lost_random": self.lost_random,
            "lost_burst": self.lost_burst,
            "lost_blackout": self.lost_blackout,
            "dropped_queue": self.dropped_queue,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "queue_peak": self.queue_peak,
        }


class Impairment:
    """One direction of an impaired link, with its state (queue, loss chain, random stream).

    Call :meth:`deliveries` for each datagram in order of entry time (times never go back).
    """

    def __init__(self, config: LinkConfig, seed: int | str = 0) -> None:
        self.config = config
        self.counters = LinkCounters()
        self._rng = random.Random(f"{seed}/packets")
        self._spike_seed = f"{seed}/spikes"
        self._bad = False  # the Gilbert-Elliott state
        self._departures: deque[float] = deque()  # of datagrams still in the queue
        self._busy_until = 0.0  # when the queue's server finishes the last datagram
        self._last_delivery = 0.0  # for jitter_keeps_order
        self._spike_onsets: dict[int, float] = {}
        self._server = _make_server(config)
        trace = config.trace
        self._delay_trace = trace if trace is not None and trace.kind == "delay" else None

    def deliveries(self, size: int, now: float) -> list[float]:
        """When a ``size``-byte datagram entering at ``now`` comes out: [] if dropped, two
        times if duplicated (in no particular order)."""
        config = self.config
        counters = self.counters
        counters.datagrams_in += 1
        counters.bytes_in += size
        draw = self._rng.random  # seven draws, in this order, whatever the settings
        u_loss, u_chain, u_burst, u_dup, u_reorder, u_jitter, u_jitter_dup = (
            draw(),
            draw(),
            draw(),
            draw(),
            draw(),
            draw(),
            draw(),
        )
        if config.blackouts and any(a <= now < b for a, b in config.blackouts):
            counters.lost_blackout += 1
            return []
        burst = config.burst
        if burst is not None:
            if self._bad:
                self._bad = u_chain >= burst.p_bad_to_good
            else:
                self._bad = u_chain < burst.p_good_to_bad
            if u_burst < (burst.loss_bad if self._bad else burst.loss_good):
                counters.lost_burst += 1
                return []
        if u_loss < config.loss:
            counters.lost_random += 1
            return []
        departure = self._enqueue(size + IPV4_UDP_OVERHEAD_BYTES, now)
        if departure is None:
            counters.dropped_queue += 1
            return []
        base = departure + config.delay_s + self._spike_extra(departure)
        if self._delay_trace is not None:
            base += _held_value(self._delay_trace, departure)
        first = max(departure, base + self._jitter(u_jitter))
        held_back = u_reorder < config.reorder
        if held_back:
            counters.reordered += 1
            first += config.reorder_delay_s
        elif config.jitter_keeps_order:
            first = max(first, self._last_delivery)
            self._last_delivery = first
        counters.delivered += 1
        if u_dup < config.duplicate:
            counters.duplicated += 1
            counters.delivered += 1
            return [first, max(departure, base + self._jitter(u_jitter_dup))]
        return [first]

    def queue_depth(self, now: float) -> int:
        """Datagrams in the bottleneck queue at ``now`` (not yet out of it)."""
        departures = self._departures
        return len(departures) - bisect_right(departures, now)

    # -- the parts ----------------------------------------------------------------------------

    def _enqueue(self, wire_bytes: int, now: float) -> float | None:
        """When the datagram leaves the bottleneck queue, or None if the queue is full."""
        server = self._server
        if server is None:
            return now
        departures = self._departures
        while departures and departures[0] <= now:
            departures.popleft()
        limit = self.config.queue_packets
        if limit is not None and len(departures) >= limit:
            return None
        start = max(now, self._busy_until)
        done = server.serve(wire_bytes, start, now)
        self._busy_until = done
        departures.append(done)
        if len(departures) > self.counters.queue_peak:
            self.counters.queue_peak = len(departures)
        return done

    def _jitter(self, u: float) -> float:
        sigma = self.config.jitter_s
        if sigma == 0.0:
            return 0.0
        shape = self.config.jitter_shape
        if shape == "normal":
            return sigma * _UNIT.inv_cdf(min(max(u, _TINY), 1.0 - _TINY))
        if shape == "uniform":
            return sigma * math.sqrt(3.0) * (2.0 * u - 1.0)  # [-a, a] has sd a / sqrt(3)
        # Pareto with tail index a and scale m has mean a m / (a - 1) and variance
        # m^2 a / ((a - 1)^2 (a - 2)); pick m for the standard deviation, subtract the mean.
        a = PARETO_SHAPE
        scale = sigma * (a - 1.0) * math.sqrt((a - 2.0) / a)
        tail: float = (1.0 - u) ** (-1.0 / a)
        return scale * tail - a * scale / (a - 1.0)

    def _spike_extra(self, t: float) -> float:
        spikes = self.config.spikes
        if spikes is None or spikes.amplitude_s == 0.0:
            return 0.0
        k = math.floor((t - spikes.offset_s) / spikes.period_s)
        best = 0.0
        # A spike may start up to phase_jitter_s early or late: the current and next slots.
        for slot in (k, k + 1):
            if slot < 0:
                continue
            start = self._spike_onset(spikes, slot)
            into = t - start
            if 0.0 <= into < spikes.duration_s:
                best = max(best, spikes.amplitude_s * (1.0 - into / spikes.duration_s))
        return best

    def spike_onset(self, slot: int) -> float | None:
        """When spike ``slot`` starts (phase jitter applied), or None without spikes."""
        spikes = self.config.spikes
        return None if spikes is None else self._spike_onset(spikes, slot)

    def _spike_onset(self, spikes: Spikes, slot: int) -> float:
        onsets = self._spike_onsets
        onset = onsets.get(slot)
        if onset is None:
            onset = spikes.offset_s + slot * spikes.period_s
            if spikes.phase_jitter_s:
                u = random.Random(f"{self._spike_seed}/{slot}").random()
                onset += (2.0 * u - 1.0) * spikes.phase_jitter_s
            if len(onsets) > 8:
                onsets.clear()  # times only move forward: old spikes are not asked again
            onsets[slot] = onset
        return onset


# -- serving the bottleneck queue -----------------------------------------------------------


class _Server(Protocol):
    """How fast the bottleneck drains: a fixed rate, a rate schedule, or opportunities."""

    def serve(self, wire_bytes: int, start: float, now: float) -> float:
        """When a datagram whose service may begin at ``start`` has left (``now`` is its
        arrival; ``start > now`` means it waited behind others)."""
        ...


def _make_server(config: LinkConfig) -> _Server | None:
    trace = config.trace
    if trace is not None and trace.kind == "opportunities":
        return _Opportunities(trace)
    if trace is not None and trace.kind == "rate":
        return _RateSchedule(trace)
    if config.rate_bps is not None:
        return _FixedRate(config.rate_bps)
    return None  # LinkConfig refuses a queue bound without something to pace it


class _FixedRate:
    def __init__(self, rate_bps: float) -> None:
        self._rate = rate_bps

    def serve(self, wire_bytes: int, start: float, now: float) -> float:
        return start + wire_bytes * 8.0 / self._rate


class _RateSchedule:
    """A piecewise-constant rate (a throughput trace), replayed in a loop. A zero rate is an
    outage: nothing leaves until it ends."""

    def __init__(self, trace: Trace) -> None:
        self._times = trace.times_s
        self._rates = trace.values
        self._period = trace.period_s
        ends = (*trace.times_s[1:], trace.period_s)
        if any(not (rate >= 0 and math.isfinite(rate)) for rate in trace.values):
            raise ValueError(f"trace {trace.name}: rates must be finite and not negative")
        # Serving must end: some positive rate has to hold for some time in each loop.
        segments = zip(trace.values, trace.times_s, ends, strict=True)
        if not any(r > 0 and end > t for r, t, end in segments):
            raise ValueError(f"trace {trace.name}: the rate is zero throughout")

    def serve(self, wire_bytes: int, start: float, now: float) -> float:
        bits = wire_bytes * 8.0
        times, rates, period = self._times, self._rates, self._period
        loop = math.floor(start / period)
        i = max(0, bisect_right(times, start - loop * period) - 1)
        t = start
        while True:
            end = loop * period + (times[i + 1] if i + 1 < len(times) else period)
            rate = rates[i]
            if rate > 0:
                need = bits / rate
                if t + need <= end:
                    return t + need
                bits -= rate * (end - t)
            t = end
            i += 1
            if i == len(times):
                i = 0
                loop += 1


class _Opportunities:
    """Mahimahi's model: the link may send 1500 bytes at each listed instant, looping at the
    trace's period. A datagram leaves at the opportunity that carries its last byte; an
    opportunity that finds the queue empty is wasted."""

    def __init__(self, trace: Trace) -> None:
        self._times = trace.times_s
        self._bytes = trace.values
        self._period = trace.period_s
        self._count = len(trace.times_s)
        self._index = -1  # the opportunity in use (a global, looping index)
        self._left = 0.0  # bytes it can still carry
        if any(not (b >= 0 and math.isfinite(b)) for b in trace.values):
            raise ValueError(f"trace {trace.name}: opportunity sizes must be finite, >= 0")
        if not any(b > 0 for b in trace.values):
            raise ValueError(f"trace {trace.name}: no opportunity carries anything")

    def _time(self, index: int) -> float:
        loop, i = divmod(index, self._count)
        return loop * self._period + self._times[i]

    def serve(self, wire_bytes: int, start: float, now: float) -> float:
        if self._index < 0 or self._time(self._index) < now or self._left <= 0:
            # The queue was empty (or the last opportunity is used up): the first one at or
            # after our arrival, or after the one in use.
            first = self._first_at_or_after(now)
            if self._index >= 0 and first <= self._index:
                first = self._index + 1
            self._index = first
            self._left = self._bytes[first % self._count]
        need = float(wire_bytes)
        while need > self._left:
            need -= self._left
            self._index += 1
            self._left = self._bytes[self._index % self._count]
        self._left -= need
        return self._time(self._index)

    def _first_at_or_after(self, t: float) -> int:
        loop = math.floor(t / self._period)
        i = bisect_left(self._times, t - loop * self._period)
        if i == self._count:
            loop, i = loop + 1, 0
        return loop * self._count + i


def _held_value(trace: Trace, t: float) -> float:
    """A step trace's value at ``t`` (each value holds until the next; the trace loops)."""
    offset = t % trace.period_s
    i = bisect_right(trace.times_s, offset) - 1
    return trace.values[i if i >= 0 else -1]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkPair:
    """Both directions of a link: ``forward`` carries what the first peer (the client, the
    relay's listening side) sends, ``reverse`` the answers."""

    forward: LinkConfig = field(default_factory=LinkConfig)
    reverse: LinkConfig = field(default_factory=LinkConfig)

    def impairments(self, seed: int | str) -> tuple[Impairment, Impairment]:
        return Impairment(self.forward, f"{seed}/forward"), Impairment(
            self.reverse, f"{seed}/reverse"
        )
