"""The simulated link: a client :class:`Session` and a :class:`Listener` joined in memory.

The first driver of the impairment model (:mod:`bench.impair`; the relay is the other). It is
the main test tier (STYLE rule 6) and the fast benchmark bench: two sans-I/O engines, one
:class:`~bench.impair.Impairment` per direction, and a fake clock that jumps straight to the
next thing that can happen (a datagram arriving, an engine timer, a scheduled action). No
sockets, no sleeps, no wall clock, so a run is fast and the same seed gives the same run,
datagram for datagram.

A step limit (over the simulation's life) turns a livelock into a failure instead of a hung
test. A *stuck timer* (an engine whose ``next_timer()`` stays due after ``handle_timer(now)``
while nothing at all happens) raises :class:`SimulationStuck` at once with the time and the
engine, or, while :data:`NUDGE_STUCK_TIMERS` is on, moves the clock by one nanosecond (as a
real clock would) and is counted in ``timer_nudges``.

Addresses are RFC 5737 documentation addresses: they are only ever tuple keys here.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from bench.impair import Impairment, LinkConfig, LinkCounters
from transport import packet as pk
from transport.config import SessionConfig
from transport.events import Closed, Connected, Event, Message, MessageLate, SessionAccepted
from transport.listener import Listener
from transport.session import Address, Session

CLIENT_ADDR: Address = ("192.0.2.1", 50000)
SERVER_ADDR: Address = ("192.0.2.2", 4433)

Side = Literal["client", "server"]
Direction = Literal["c2s", "s2c"]
Tap = Callable[[Direction, bytes, float], bytes | None]
"""Sees every datagram an engine emits, before the link: return it (or a changed copy) to
send it on, or None to drop it."""

DEFAULT_MAX_STEPS = 200_000
DEFAULT_DELAY_S = 0.010
"""One-way delay of the link when the caller gives none."""
NUDGE_STUCK_TIMERS = False
"""Default of ``SimNetwork(nudge_stuck_timers=...)``. True only until the loss-timer livelock
(``test_session_sim.py::test_loss_detection_timer_never_livelocks``, a strict xfail) is fixed:
then set it to False, so that any engine timer that stays due fails the test that meets it."""
CLOCK_NUDGE_S = 1e-9
"""How far the clock moves when an engine's due timer makes no progress and nudging is on:
one tick of a nanosecond clock, the finest a real adapter's clock could step."""


class SimulationStuck(AssertionError):
    """The simulation exceeded its step limit, or an engine timer livelocked."""


class SimulationTimeout(AssertionError):
    """A condition did not hold within the simulated time allowed."""


# -- the link ---------------------------------------------------------------------------------


class Link:
    """One direction: the impairment model with its own seeded state, and what it did."""

    def __init__(self, config: LinkConfig, seed: str) -> None:
        self.config = config
        self.impairment = Impairment(config, seed)

    @property
    def counters(self) -> LinkCounters:
        return self.impairment.counters

    @property
    def datagrams_sent(self) -> int:
        return self.counters.datagrams_in

    @property
    def bytes_sent(self) -> int:
        return self.counters.bytes_in

    @property
    def datagrams_lost(self) -> int:
        return self.counters.dropped

    @property
    def datagrams_duplicated(self) -> int:
        return self.counters.duplicated


@dataclass(frozen=True, slots=True)
class Captured:
    """A datagram as it left an engine (after the tap, before the link)."""

    direction: Direction
    time: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    """A message handed to ``Session.send`` through the simulator."""

    side: Side
    channel: int
    message_id: int
    time: float
    data: bytes


# -- the network ------------------------------------------------------------------------------


class SimNetwork:
    """A client :class:`Session` and a :class:`Listener` joined by two simulated links.

    ``c2s`` is the client-to-server direction, ``s2c`` the reverse (the same model as ``c2s``
    unless given). Engines get their randomness from ``random.Random(seed)`` streams, the links
    from their own, so a seed pins key material, connection IDs and every impairment.

    Events of the client and of the first session the listener accepts are collected, with
    the simulated time they came out, in :attr:`client_log` and :attr:`server_log`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        config: SessionConfig | None = None,
        server_config: SessionConfig | None = None,
        c2s: LinkConfig | None = None,
        s2c: LinkConfig | None = None,
        tap: Tap | None = None,
        capture: bool = False,
        max_steps: int = DEFAULT_MAX_STEPS,
        nudge_stuck_timers: bool = NUDGE_STUCK_TIMERS,
        start_s: float = 0.0,
    ) -> None:
        config = config if config is not None else SessionConfig()
        c2s = c2s if c2s is not None else LinkConfig(delay_s=DEFAULT_DELAY_S)
        self.now = start_s
        self.config = config
        self.links: dict[Direction, Link] = {
            "c2s": Link(c2s, f"{seed}/c2s"),
            "s2c": Link(s2c if s2c is not None else c2s, f"{seed}/s2c"),
        }
        self.tap = tap
        self.capture = capture
        self.captured: list[Captured] = []
        self.max_steps = max_steps
        self.nudge_stuck_timers = nudge_stuck_timers
        self.steps = 0
        self.timer_nudges = 0
        """How often a due timer made no progress and the clock was nudged (see module doc)."""
        self.unroutable = 0
        """Datagrams the listener addressed to someone other than our client."""
        self.listener = Listener(
            server_config if server_config is not None else config,
            self.now,
            random.Random(f"{seed}/listener").randbytes,
        )
        self.client = Session.client(
            config, SERVER_ADDR, self.now, random.Random(f"{seed}/client").randbytes
        )
        self.server: Session | None = None
        """The first session the listener accepted (its events go to :attr:`server_log`)."""
        self.accepted: list[Session] = []
        self.client_log: list[tuple[float, Event]] = []
        self.server_log: list[tuple[float, Event]] = []
        self.sent: list[Sent] = []
        self.observers: list[Callable[[SimNetwork], None]] = []
        """Called after every step, e.g. to record the peak of a stat."""
        self._in_flight: list[tuple[float, int, Direction, bytes]] = []
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._progress = False

    # -- driving ------------------------------------------------------------------------------

    def run(self, until: float) -> None:
        """Run the simulation up to simulated time ``until``."""
        while True:
            self._process()
            if self.now >= until:
                return
            self._advance(until)

    def run_for(self, duration_s: float) -> None:
        self.run(self.now + duration_s)

    def run_until(self, condition: Callable[[], bool], *, timeout_s: float = 30.0) -> float:
        """Run until ``condition()`` holds; return the simulated time it took.

        Raises :class:`SimulationTimeout` when it does not hold within ``timeout_s``.
        """
        start = self.now
        deadline = start + timeout_s
        while True:
            self._process()
            if condition():
                return self.now - start
            if self.now >= deadline:
                raise SimulationTimeout(f"condition still false after {timeout_s} s (t={self.now})")
            self._advance(deadline)

    def run_until_quiet(self, *, timeout_s: float = 30.0) -> float:
        """Run until both sides have nothing queued, unacknowledged or half reassembled."""

        def quiet() -> bool:
            sessions = [s for s in (self.client, self.server) if s is not None]
            return all(_is_quiet(s) for s in sessions) and not self._in_flight

        return self.run_until(quiet, timeout_s=timeout_s)

    def connect(self, *, timeout_s: float = 10.0) -> Session:
        """Complete the handshake; return the server side's session."""
        self.run_until(
            lambda: (
                self.server is not None
                and any(isinstance(e, Connected) for e in self.client_events)
                and any(isinstance(e, Connected) for e in self.server_events)
            ),
            timeout_s=timeout_s,
        )
        assert self.server is not None
        return self.server

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Call ``action()`` when the clock reaches ``at`` (before that step's output)."""
        self._seq += 1
        heapq.heappush(self._actions, (at, self._seq, action))

    def inject(self, direction: Direction, data: bytes, *, delay_s: float = 0.0) -> None:
        """Put a datagram on the wire as is: no tap, no impairment, no capture."""
        self._seq += 1
        heapq.heappush(self._in_flight, (self.now + delay_s, self._seq, direction, data))

    # -- sending messages ---------------------------------------------------------------------

    def session(self, side: Side) -> Session:
        if side == "client":
            return self.client
        if self.server is None:
            raise RuntimeError("no server session yet: call connect() first")
        return self.server

    def send(
        self, side: Side, data: bytes, *, channel: int = 0, deadline_s: float | None = None
    ) -> int:
        """``Session.send`` now, on ``side``; the send time is kept for latency checks."""
        mid = self.session(side).send(data, channel=channel, deadline_s=deadline_s, now=self.now)
        self.sent.append(Sent(side, channel, mid, self.now, data))
        return mid

    def send_many(
        self,
        side: Side,
        payloads: Iterable[bytes],
        *,
        channel: int = 0,
        interval_s: float = 0.0,
        deadline_s: float | None = None,
        start_s: float | None = None,
    ) -> None:
        """Send ``payloads`` in order: all now, or one every ``interval_s`` from ``start_s``."""
        first = self.now if start_s is None else start_s
        for i, data in enumerate(payloads):
            at = first + i * interval_s
            if at <= self.now:
                self.send(side, data, channel=channel, deadline_s=deadline_s)
            else:
                self.schedule(at, self._sender(side, data, channel, deadline_s))

    def _sender(
        self, side: Side, data: bytes, channel: int, deadline_s: float | None
    ) -> Callable[[], None]:
        def action() -> None:
            if self.session(side).is_established:  # a closed session takes no more
                self.send(side, data, channel=channel, deadline_s=deadline_s)

        return action

    # -- reading results ----------------------------------------------------------------------

    @property
    def client_events(self) -> list[Event]:
        return [e for _, e in self.client_log]

    @property
    def server_events(self) -> list[Event]:
        return [e for _, e in self.server_log]

    def log(self, side: Side) -> list[tuple[float, Event]]:
        return self.client_log if side == "client" else self.server_log

    def messages(self, side: Side, channel: int | None = None) -> list[Message]:
        """Messages delivered to ``side`` (on ``channel``), in delivery order."""
        return [
            e
            for _, e in self.log(side)
            if isinstance(e, Message) and (channel is None or e.channel == channel)
        ]

    def late(self, side: Side, channel: int | None = None) -> list[MessageLate]:
        return [
            e
            for _, e in self.log(side)
            if isinstance(e, MessageLate) and (channel is None or e.channel == channel)
        ]

    def closed(self, side: Side) -> Closed | None:
        """The Closed event of ``side``, if it came."""
        found = [e for _, e in self.log(side) if isinstance(e, Closed)]
        assert len(found) <= 1, f"{side} closed more than once: {found}"
        return found[0] if found else None

    def sent_messages(self, side: Side, channel: int | None = None) -> list[Sent]:
        return [
            s for s in self.sent if s.side == side and (channel is None or s.channel == channel)
        ]

    def delivery_times(self, receiver: Side, channel: int) -> dict[int, float]:
        """message id -> simulated time it was delivered to ``receiver`` on ``channel``."""
        return {
            e.message_id: t
            for t, e in self.log(receiver)
            if isinstance(e, Message) and e.channel == channel
        }

    def latencies(self, sender: Side, channel: int) -> dict[int, float]:
        """message id -> send() to delivery, for messages ``sender`` sent and the peer got."""
        receiver: Side = "server" if sender == "client" else "client"
        delivered = self.delivery_times(receiver, channel)
        return {
            s.message_id: delivered[s.message_id] - s.time
            for s in self.sent_messages(sender, channel)
            if s.message_id in delivered
        }

    # -- the step -----------------------------------------------------------------------------

    def _process(self) -> None:
        """One step at ``now``: arrivals, due actions, everything the engines have to send."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise SimulationStuck(f"step limit {self.max_steps} exceeded at t={self.now}")
        now = self.now
        progress = False
        in_flight = self._in_flight
        while in_flight and in_flight[0][0] <= now:
            _, _, direction, data = heapq.heappop(in_flight)
            if direction == "c2s":
                self.listener.receive_datagram(data, CLIENT_ADDR, now)
            else:
                self.client.receive_datagram(data, SERVER_ADDR, now)
            progress = True
        actions = self._actions
        while actions and actions[0][0] <= now:
            heapq.heappop(actions)[2]()
            progress = True
        for data, _ in self.client.datagrams_to_send(now):
            self._transmit("c2s", data)
            progress = True
        for data, addr in self.listener.datagrams_to_send(now):
            if addr == CLIENT_ADDR:
                self._transmit("s2c", data)
            else:
                self.unroutable += 1
            progress = True
        progress |= self._collect_events()
        self._progress = progress
        for observer in self.observers:
            observer(self)

    def _advance(self, horizon: float) -> None:
        """Move the clock to the next arrival, action or timer, and fire the timers due."""
        now = self.now
        t = horizon
        if self._in_flight:
            t = min(t, self._in_flight[0][0])
        if self._actions:
            t = min(t, self._actions[0][0])
        engines: tuple[Session | Listener, Session | Listener] = (self.client, self.listener)
        for engine in engines:
            timer = engine.next_timer()
            if timer is not None and timer < t:
                t = timer
        if t > now:
            self.now = t
        elif not self._progress:
            # A timer is due, it already fired at this time, and nothing happened since.
            if not self.nudge_stuck_timers:
                due = [type(e).__name__ for e in engines if _due(e, now)]
                raise SimulationStuck(
                    f"timer livelock at t={now!r}: {due} stay due after handle_timer "
                    "and emit nothing"
                )
            self.timer_nudges += 1
            self.now = now + CLOCK_NUDGE_S
        for engine in engines:
            if _due(engine, self.now):
                engine.handle_timer(self.now)

    def _transmit(self, direction: Direction, data: bytes) -> None:
        now = self.now
        if self.tap is not None:
            changed = self.tap(direction, data, now)
            if changed is None:
                return
            data = changed
        if self.capture:
            self.captured.append(Captured(direction, now, data))
        for at in self.links[direction].impairment.deliveries(len(data), now):
            self._seq += 1
            heapq.heappush(self._in_flight, (at, self._seq, direction, data))

    def _collect_events(self) -> bool:
        progress = False
        now = self.now
        while (event := self.client.next_event()) is not None:
            self.client_log.append((now, event))
            progress = True
        while (accepted := self.listener.next_event()) is not None:
            match accepted:
                case SessionAccepted(session=session):
                    self.accepted.append(session)
                    if self.server is None:
                        self.server = session
            progress = True
        if self.server is not None:
            while (event := self.server.next_event()) is not None:
                self.server_log.append((now, event))
                progress = True
        return progress


def _due(engine: Session | Listener, now: float) -> bool:
    timer = engine.next_timer()
    return timer is not None and timer <= now


def _is_quiet(session: Session) -> bool:
    if session.is_terminated:
        return True
    stats = session.stats()
    return not (stats.send_queue_bytes or stats.bytes_in_flight or stats.reassembly_bytes)


def packet_number(datagram: bytes) -> int:
    """The packet number of a DATA datagram (it travels in the clear, PROTOCOL.md §3)."""
    _, _, pn = pk.DATA_HEADER.unpack_from(datagram)
    return int(pn)


def next_packet_number(session: Session) -> int:
    """The number the session's next protected packet will carry.

    Packets are numbered from 0 and every protected packet is counted in ``packets_sent``, so
    a test can name the packet that will carry the message it is about to send.
    """
    return session.stats().packets_sent


def payload(index: int, size: int) -> bytes:
    """Deterministic, recognisable message bytes: the index, then a pattern that depends on it."""
    if size <= 0:
        return b""
    head = index.to_bytes(4, "big")
    body = bytes((index + i) & 0xFF for i in range(min(size, 256)))
    return (head + body * (size // len(body) + 1))[:size]


def quantile(samples: Iterable[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
