"""asyncio adapter: moves datagrams between a UDP socket and the sans-I/O engines.

It owns the socket, the clock (``time.monotonic``) and exactly one timer per endpoint, armed
at the engine's ``next_timer()``. ``connect`` gives an :class:`AsyncSession`; ``listen`` gives
an :class:`AsyncListener` whose ``accept()`` yields sessions with the same surface.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from transport.config import SessionConfig
from transport.errors import HandshakeTimeoutError, SessionClosedError
from transport.events import Closed, Connected, Message, MessageLate, SessionAccepted
from transport.listener import Listener
from transport.session import Address, CloseCode, Session
from transport.stats import SessionStats
from transport.udp import DatagramIO, open_socket

READS_PER_WAKEUP = 256
INBOX_MESSAGES = 1024
"""Messages an AsyncSession takes from its engine ahead of the program's ``receive``."""


class AsyncSession:
    """An established session driven by the event loop.

    ``send`` queues and returns at once; ``receive``/``async for`` yield :class:`Message`;
    iteration ends when the session closes.
    """

    def __init__(self, engine: Session, endpoint: _Endpoint) -> None:
        self._engine = engine
        self._endpoint = endpoint
        self._inbox: deque[Message] = deque()
        self._handler: Callable[[Message], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed: Closed | None = None
        self._closed_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._drain_below = -1  # >= 0 while drain() waits
        self._connected_event = asyncio.Event()
        self._take_all = False  # closing: take every event, the program reads no more
        self.late = 0
        """Messages the peer sent that arrived too late (past their deadline) or never."""
        self.late_by_channel: dict[int, int] = {}

    @property
    def peer_addr(self) -> Address:
        return self._engine.peer_addr

    @property
    def local_addr(self) -> Address:
        name = self._endpoint.io.sock.getsockname()
        return name[0], name[1]

    @property
    def target_bitrate_bps(self) -> float | None:
        """The rate controller's target for the application's encoder (None with a
        controller that publishes none, such as the default "newreno")."""
        return self._engine.target_bitrate_bps

    @property
    def closed(self) -> Closed | None:
        """The :class:`Closed` event once the session has ended, else None."""
        return self._closed

    def send(self, data: bytes, *, channel: int = 0, deadline_s: float | None = None) -> int:
        """Queue ``data`` on ``channel`` and send what the window allows, now; return the
        message id. Raises UsageError or SessionClosedError. Never blocks."""
        if self._closed is not None:
            raise SessionClosedError(self._closed.reason)
        now = time.monotonic()
        mid = self._engine.send(data, channel=channel, deadline_s=deadline_s, now=now)
        # Sending here rather than from the ready queue saves a loop pass per message; a
        # burst of small sends then takes a packet each, which is what a realtime app wants.
        self._endpoint.send_now(now)
        return mid

    def set_handler(self, handler: Callable[[Message], None] | None) -> None:
        """Deliver messages by calling ``handler`` from the network callback, instead of
        through ``receive``/``async for`` (pass None to go back).

        The lowest-latency path: no task switch between arrival and your code. The handler
        runs inside the event loop's I/O callback, so it must not block; an exception it
        raises is logged by the loop and the session carries on.
        """
        self._handler = handler
        if handler is not None:
            while self._inbox:
                handler(self._inbox.popleft())

    async def drain(self, below_bytes: int = 0) -> None:
        """Wait until no more than ``below_bytes`` wait to be sent or acknowledged."""
        while self._engine.send_queue_bytes > below_bytes:
            if self._closed is not None:
                raise SessionClosedError(self._closed.reason)
            self._drained.clear()
            self._drain_below = below_bytes
            try:
                await self._drained.wait()
            finally:
                self._drain_below = -1

    async def receive(self) -> Message:
        """The next message; raises SessionClosedError once the session has closed."""
        inbox = self._inbox
        if len(inbox) <= INBOX_MESSAGES // 2:
            self._dispatch()  # take what the engine held back while the inbox was full
        while not inbox:
            if self._closed is not None:
                raise SessionClosedError(self._closed.reason)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return inbox.popleft()

    def __aiter__(self) -> AsyncSession:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except SessionClosedError:
            raise StopAsyncIteration from None

    def stats(self) -> SessionStats:
        return self._engine.stats(time.monotonic())

    async def close(self, reason: str = "closed") -> Closed:
        """Close gracefully (reliable data is flushed first, bounded) and wait for the end."""
        self._take_all = True
        if self._closed is None:
            self._engine.close(time.monotonic(), reason, CloseCode.NORMAL)
            self._endpoint.schedule_flush()
        self._dispatch()
        await self._closed_event.wait()
        assert self._closed is not None
        return self._closed

    async def wait_closed(self) -> Closed:
        """Wait for the end; messages not read by then stay readable with ``receive``."""
        self._take_all = True
        self._dispatch()
        await self._closed_event.wait()
        assert self._closed is not None
        return self._closed

    # -- called by the endpoint ----------------------------------------------------------------

    def _dispatch(self) -> None:
        engine = self._engine
        inbox = self._inbox
        # Messages stay in the engine while the inbox is full, so a program that does not
        # read applies back-pressure (SessionConfig.max_undelivered_bytes) instead of letting
        # memory grow. Closing lifts the limit: what is left will not be read.
        limit = (1 << 62) if self._take_all else INBOX_MESSAGES
        while len(inbox) < limit and (event := engine.next_event()) is not None:
            if type(event) is Message:
                handler = self._handler
                if handler is not None:
                    try:
                        handler(event)
                    except Exception as exc:  # the app's bug must not stop the session
                        self._endpoint.loop.call_exception_handler(
                            {"message": "message handler failed", "exception": exc}
                        )
                    continue
                self._inbox.append(event)
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif type(event) is MessageLate:
                self.late += 1
                channel = event.channel
                self.late_by_channel[channel] = self.late_by_channel.get(channel, 0) + 1
            elif type(event) is Connected:
                self._connected_event.set()
            elif isinstance(event, Closed):
                self._closed = event
                self._closed_event.set()
                self._connected_event.set()
                self._drained.set()
                if self._waiter is not None and not self._waiter.done():
                    self._waiter.set_result(None)
        if self._drain_below >= 0 and engine.send_queue_bytes <= self._drain_below:
            self._drained.set()


class _Endpoint:
    """One socket, one engine (a client Session or a Listener), one timer."""

    def __init__(self, io: DatagramIO, engine: Session | Listener) -> None:
        self.io = io
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[int, AsyncSession] = {}
        self.accepted: asyncio.Queue[AsyncSession] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._flush_scheduled = False
        self._closed = False
        self.loop.add_reader(io.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        self.engine.receive_datagrams(self.io.read(READS_PER_WAKEUP), time.monotonic())
        # Wake the readers first; what we owe the peer (ACKs) goes out right after them, from
        # the ready queue, so an ACK's encryption never sits between arrival and delivery.
        self._dispatch_events()
        self.schedule_flush()

    def send_now(self, now: float) -> None:
        """Send what the engine has due at once (called by ``send``), then make sure the
        timer is no later than the engine's next deadline. Nothing else: work done after a
        send competes for the CPU with the peer that is waking up to receive it."""
        self._send_due(now)
        self._arm_timer(now)

    def _send_due(self, now: float) -> None:
        """Seal and send everything that is due (one GSO batch per 64 datagrams)."""
        out = self.engine.datagrams_to_send(now)
        if (out or self.io.blocked) and not self.io.write(out):
            self.loop.add_writer(self.io.sock.fileno(), self._on_writable)

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._closed:
            self._after_io(time.monotonic())

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        now = time.monotonic()
        timer = self.engine.next_timer()
        if timer is not None and timer <= now:
            self.engine.handle_timer(now)
        self._after_io(now)

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.io.sock.fileno())
        if not self.io.write([]):
            self.loop.add_writer(self.io.sock.fileno(), self._on_writable)

    def _after_io(self, now: float) -> None:
        """Send what is due, hand events to sessions, re-arm the timer."""
        if self._closed:
            return
        self._send_due(now)
        self._dispatch_events()
        self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        timer = self.engine.next_timer()
        if timer is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = float("inf")
        elif timer < self._timer_at:
            # A timer that fires early is harmless (it re-checks), so only move it earlier.
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = timer
            self._timer = self.loop.call_later(max(0.0, timer - now), self._on_timer)

    def _dispatch_events(self) -> None:
        engine = self.engine
        if isinstance(engine, Listener):
            while (accepted := engine.next_event()) is not None:
                assert isinstance(accepted, SessionAccepted)
                wrapper = AsyncSession(accepted.session, self)
                self.sessions[id(accepted.session)] = wrapper
                self.accepted.put_nowait(wrapper)
            for wrapper in list(self.sessions.values()):
                wrapper._dispatch()
                if wrapper._engine.is_terminated:
                    del self.sessions[id(wrapper._engine)]
        else:
            for wrapper in self.sessions.values():
                wrapper._dispatch()
            if engine.is_terminated:
                self.loop.call_soon(self.close)  # the linger is over: release the socket

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        fd = self.io.sock.fileno()
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        self.io.sock.close()


class AsyncListener:
    """Accepts sessions on one UDP socket."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint

    @property
    def local_addr(self) -> Address:
        name = self._endpoint.io.sock.getsockname()
        return name[0], name[1]

    @property
    def listener(self) -> Listener:
        engine = self._endpoint.engine
        assert isinstance(engine, Listener)
        return engine

    async def accept(self) -> AsyncSession:
        return await self._endpoint.accepted.get()

    def __aiter__(self) -> AsyncIterator[AsyncSession]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AsyncSession]:
        while True:
            yield await self.accept()

    async def close(self, reason: str = "listener closed") -> None:
        """Close every session gracefully, then the socket."""
        sessions = list(self._endpoint.sessions.values())
        await asyncio.gather(*(s.close(reason) for s in sessions if s.closed is None))
        self._endpoint.close()

    async def __aenter__(self) -> AsyncListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def listen(
    addr: Address, config: SessionConfig | None = None, *, offload: bool = True
) -> AsyncListener:
    """Listen for sessions on ``addr`` (port 0 picks one: see ``local_addr``)."""
    config = config or SessionConfig()
    sock = open_socket(addr, config.extra_socket_buffer_bytes)
    engine = Listener(config, time.monotonic())
    return AsyncListener(_Endpoint(DatagramIO(sock, offload=offload), engine))


async def connect(
    addr: Address,
    config: SessionConfig | None = None,
    *,
    local_addr: Address | None = None,
    offload: bool = True,
) -> AsyncSession:
    """Open a session to a listener at ``addr``; returns once the handshake is done."""
    config = config or SessionConfig()
    if local_addr is None:
        local_addr = ("::", 0) if ":" in addr[0] else ("0.0.0.0", 0)
    sock = open_socket(local_addr, config.extra_socket_buffer_bytes)
    engine = Session.client(config, addr, time.monotonic())
    endpoint = _Endpoint(DatagramIO(sock, offload=offload), engine)
    session = AsyncSession(engine, endpoint)
    endpoint.sessions[id(engine)] = session
    endpoint.schedule_flush()
    try:
        await session._connected_event.wait()  # set on Connected, and on Closed too
    except BaseException:
        endpoint.close()
        raise
    if session.closed is not None:
        endpoint.close()
        raise HandshakeTimeoutError(f"no session with {addr[0]}:{addr[1]}: {session.closed.reason}")
    return session


__all__ = ["AsyncListener", "AsyncSession", "connect", "listen"]
