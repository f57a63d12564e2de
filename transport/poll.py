"""Poll adapter for game loops: call ``service()`` once per tick; no threads, no event loop.

``service(timeout=0.0)`` reads what the socket holds, fires due timers, sends what is due and
returns the events. With ``timeout > 0`` it waits at most that long for the first datagram or
timer, which suits a loop that has nothing else to do.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass

from transport.config import SessionConfig
from transport.errors import HandshakeTimeoutError, SessionClosedError
from transport.events import Closed, Event, SessionAccepted
from transport.listener import Listener
from transport.session import Address, CloseCode, Session
from transport.stats import SessionStats
from transport.udp import DatagramIO, open_socket

READS_PER_SERVICE = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerEvent:
    """An event of one of a poll listener's sessions."""

    peer: PollPeer
    event: Event


class _PollEndpoint:
    """One socket and one engine, driven by explicit ``service`` calls."""

    def __init__(self, io: DatagramIO, engine: Session | Listener) -> None:
        self.io = io
        self.engine = engine
        self.closed = False

    def step(self, timeout: float) -> None:
        engine = self.engine
        now = time.monotonic()
        if timeout > 0:
            timer = engine.next_timer()
            wait = timeout if timer is None else min(timeout, max(0.0, timer - now))
            select.select([self.io.sock], [], [], wait)
            now = time.monotonic()
        engine.receive_datagrams(self.io.read(READS_PER_SERVICE, until_empty=True), now)
        timer = engine.next_timer()
        if timer is not None and timer <= now:
            engine.handle_timer(now)
        self.flush(now)

    def flush(self, now: float) -> None:
        out = self.engine.datagrams_to_send(now)
        if out or self.io.blocked:
            self.io.write(out)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.io.sock.close()


class PollPeer:
    """A session driven by explicit ``service`` calls: one accepted by a
    :class:`PollListener`, or (as :class:`PollSession`) a client's own."""

    def __init__(self, endpoint: _PollEndpoint, engine: Session) -> None:
        self._endpoint = endpoint
        self._engine = engine

    @property
    def peer_addr(self) -> Address:
        return self._engine.peer_addr

    @property
    def is_established(self) -> bool:
        return self._engine.is_established

    @property
    def is_terminated(self) -> bool:
        return self._engine.is_terminated

    def send(self, data: bytes, *, channel: int = 0, deadline_s: float | None = None) -> int:
        """Queue a message; it leaves on this call (so a tick's sends are not delayed)."""
        if self._endpoint.closed:
            raise SessionClosedError("socket closed")
        now = time.monotonic()
        mid = self._engine.send(data, channel=channel, deadline_s=deadline_s, now=now)
        self._endpoint.flush(now)
        return mid

    def stats(self) -> SessionStats:
        return self._engine.stats(time.monotonic())

    def close(self, reason: str = "closed") -> None:
        """Start a graceful close; keep calling ``service`` until a Closed event arrives."""
        now = time.monotonic()
        self._engine.close(now, reason, CloseCode.NORMAL)
        if not self._endpoint.closed:
            self._endpoint.flush(now)


class PollSession(PollPeer):
    """A client session for a game loop, owning its socket. Create with :func:`connect`."""

    def service(self, timeout: float = 0.0) -> list[Event]:
        """Do the session's I/O and timers; return the events since the last call."""
        if self._endpoint.closed:
            return []
        self._endpoint.step(timeout)
        events: list[Event] = []
        while (event := self._engine.next_event()) is not None:
            events.append(event)
        if self._engine.is_terminated:
            self._endpoint.close()
        return events


class PollListener:
    """Accepts sessions; ``service`` returns :class:`PeerEvent` for all of them."""

    def __init__(self, endpoint: _PollEndpoint, engine: Listener) -> None:
        self._endpoint = endpoint
        self._engine = engine
        self._peers: dict[int, PollPeer] = {}

    @property
    def local_addr(self) -> Address:
        name = self._endpoint.io.sock.getsockname()
        return name[0], name[1]

    @property
    def peers(self) -> list[PollPeer]:
        return list(self._peers.values())

    def service(self, timeout: float = 0.0) -> list[PeerEvent]:
        if self._endpoint.closed:
            return []
        self._endpoint.step(timeout)
        events: list[PeerEvent] = []
        while (accepted := self._engine.next_event()) is not None:
            assert isinstance(accepted, SessionAccepted)
            peer = PollPeer(self._endpoint, accepted.session)
            self._peers[id(accepted.session)] = peer
        for key, peer in list(self._peers.items()):
            engine = peer._engine
            while (event := engine.next_event()) is not None:
                events.append(PeerEvent(peer=peer, event=event))
            if engine.is_terminated:
                del self._peers[key]
        return events

    def close(self) -> None:
        """Close the socket at once (peers see an idle timeout unless closed before)."""
        self._endpoint.close()


def connect(
    addr: Address, config: SessionConfig | None = None, *, local_addr: Address | None = None
) -> PollSession:
    """Start a session to ``addr``; call ``service`` until a Connected (or Closed) event."""
    config = config or SessionConfig()
    if local_addr is None:
        local_addr = ("::", 0) if ":" in addr[0] else ("0.0.0.0", 0)
    sock = open_socket(local_addr, config.extra_socket_buffer_bytes)
    now = time.monotonic()
    engine = Session.client(config, addr, now)
    endpoint = _PollEndpoint(DatagramIO(sock), engine)
    endpoint.flush(now)
    return PollSession(endpoint, engine)


def listen(addr: Address, config: SessionConfig | None = None) -> PollListener:
    """Listen on ``addr`` (port 0 picks one; see ``local_addr``)."""
    config = config or SessionConfig()
    sock = open_socket(addr, config.extra_socket_buffer_bytes)
    engine = Listener(config, time.monotonic())
    return PollListener(_PollEndpoint(DatagramIO(sock), engine), engine)


def wait_connected(session: PollSession, timeout_s: float) -> list[Event]:
    """Service ``session`` until it is established; return the events seen on the way.

    Raises HandshakeTimeoutError if it closes or the time runs out first.
    """
    end = time.monotonic() + timeout_s
    seen: list[Event] = []
    while not session.is_established:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise HandshakeTimeoutError("handshake did not finish in time")
        seen.extend(session.service(timeout=min(remaining, 0.05)))
        if any(isinstance(e, Closed) for e in seen):
            raise HandshakeTimeoutError("session closed during the handshake")
    return seen
