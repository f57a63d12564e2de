"""The listening endpoint (sans-I/O): stateless retry, then one :class:`Session` per peer.

An INITIAL without a valid token gets a RETRY carrying one, and nothing is stored; only an
INITIAL whose token proves the address answers from where it claims creates a session. A
spoofed source therefore gets at most a RETRY (about 40 bytes) per 1200-byte INITIAL.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence

from transport import packet as pk
from transport.config import SessionConfig
from transport.crypto import RetryTokens
from transport.errors import DecodeError
from transport.events import SessionAccepted
from transport.session import Address, RandBytes, Session, State


class ListenerCounters:
    __slots__ = ("bytes_received", "bytes_sent", "decode_failures", "refused", "retries_sent")

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.retries_sent = 0
        self.refused = 0
        self.decode_failures = 0


class Listener:
    """Accepts sessions on one socket and routes datagrams to them by connection ID."""

    def __init__(
        self, config: SessionConfig, now: float, randbytes: RandBytes = os.urandom
    ) -> None:
        self.config = config
        self.counters = ListenerCounters()
        self._randbytes = randbytes
        self._tokens = RetryTokens(randbytes(32), config.retry_token_lifetime_s)
        self._by_cid: dict[bytes, Session] = {}  # our connection ID -> session
        self._by_client: dict[tuple[Address, bytes], Session] = {}  # (addr, client CID)
        self._announced: set[bytes] = set()
        self._events: deque[SessionAccepted] = deque()
        self._out: list[tuple[bytes, Address]] = []

    @property
    def sessions(self) -> list[Session]:
        return list(self._by_cid.values())

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> Session | None:
        """Feed one datagram; return the session it went to, if any. Never raises on input."""
        self.counters.bytes_received += len(data)
        try:
            ptype = pk.packet_type(data)
            if ptype == pk.DATA:
                session = self._by_cid.get(data[1 : 1 + pk.CID_BYTES])
                if session is None:
                    raise DecodeError("DATA for an unknown connection")
                session.receive_datagram(data, addr, now)
                if session.local_cid not in self._announced and session.is_established:
                    self._announced.add(session.local_cid)
                    self._events.append(SessionAccepted(session=session))
                return session
            if ptype == pk.INITIAL:
                return self._on_initial(data, addr, now)
            raise DecodeError("handshake reply sent to a listener")
        except DecodeError:
            self.counters.decode_failures += 1
            return None

    def receive_datagrams(self, datagrams: Sequence[tuple[bytes, Address]], now: float) -> None:
        """Feed several datagrams (one read's worth). Runs of DATA for one established session
        from one address go to :meth:`Session.receive_data` together (the bulk path)."""
        count = len(datagrams)
        i = 0
        while i < count:
            data, addr = datagrams[i]
            session = None
            if data and data[0] == pk.DATA:
                session = self._by_cid.get(data[1 : 1 + pk.CID_BYTES])
            if session is None or session.state is not State.ESTABLISHED:
                self.receive_datagram(data, addr, now)
                i += 1
                continue
            cid = session.local_cid
            run = [data]
            i += 1
            while i < count:
                data, other = datagrams[i]
                if other != addr or not data.startswith(cid, 1):
                    break
                run.append(data)
                i += 1
            self.counters.bytes_received += sum(map(len, run))
            session.receive_data(run, addr, now)

    def _on_initial(self, data: bytes, addr: Address, now: float) -> Session | None:
        initial = pk.decode_initial(data)
        existing = self._by_client.get((addr, initial.client_cid))
        if existing is not None:
            existing.receive_datagram(data, addr, now)
            return existing
        if not self._tokens.validate(initial.token, addr, initial.client_cid, now):
            token = self._tokens.issue(addr, initial.client_cid, now)
            self._out.append((pk.encode_retry(pk.Retry(initial.client_cid, token)), addr))
            self.counters.retries_sent += 1
            return None
        if len(self._by_cid) >= self.config.max_sessions:
            self.counters.refused += 1
            return None
        session = Session.server(self.config, initial, addr, now, self._randbytes)
        self._by_cid[session.local_cid] = session
        self._by_client[(addr, initial.client_cid)] = session
        return session

    def next_event(self) -> SessionAccepted | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """The listener's own datagrams (RETRY) and every session's."""
        out = self._out
        self._out = []
        for session in self._by_cid.values():
            out.extend(session.datagrams_to_send(now))
        self.counters.bytes_sent += sum(len(d) for d, _ in out)
        return out

    def next_timer(self) -> float | None:
        timers = [t for s in self._by_cid.values() if (t := s.next_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for session in list(self._by_cid.values()):
            timer = session.next_timer()
            if timer is not None and timer <= now:
                session.handle_timer(now)
            if session.is_terminated:
                self._forget(session)

    def _forget(self, session: Session) -> None:
        del self._by_cid[session.local_cid]
        self._by_client = {k: s for k, s in self._by_client.items() if s is not session}
        self._announced.discard(session.local_cid)
