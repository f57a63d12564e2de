"""The session engine: one encrypted, multi-channel conversation with one peer (sans-I/O).

Bytes and the time go in (``receive_datagram``, ``handle_timer``); datagrams to send, events
and the next deadline come out. No sockets, threads or clocks here; adapters supply them.
The states and what moves between them are in ``_TRANSITIONS`` below and in PROTOCOL.md §6.
"""

from __future__ import annotations

import enum
import math
import os
import struct
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from transport import packet as pk
from transport.acks import AckTracker
from transport.config import SessionConfig
from transport.congestion import CongestionController, LinkSignals, NewReno
from transport.crypto import (
    TAG_BYTES,
    KeyPair,
    PacketProtection,
    ReplayWindow,
    SessionKeys,
    derive_keys,
    open_confirm,
    seal_confirm,
)
from transport.errors import DecodeError, UsageError
from transport.estimator import LossTracker
from transport.events import Closed, Connected, Event, LinkQualityChanged, Message
from transport.gcc import GccConfig, GoogCC
from transport.link import LinkEstimator
from transport.nack import NackScheduler
from transport.pacer import Pacer, PacerConfig
from transport.parity import ParityDecoder
from transport.reassembly import ACCEPTED, REFUSED, VIOLATION, Reassembler
from transport.rtt import RttEstimator
from transport.sender import Sender
from transport.stats import Counters, SessionStats
from transport.wire import (
    FRAGMENT,
    MAX_ARRIVALS,
    AbandonFrame,
    AckFrame,
    Arrival,
    ArrivalsFrame,
    CloseFrame,
    FragmentFrame,
    NackFrame,
    ParityFrame,
    encode_arrivals,
    encode_close,
    parse_fragment,
    parse_frames,
)

Address = tuple[str, int]
RandBytes = Callable[[int], bytes]


class CloseCode(enum.IntEnum):
    """Codes carried by CLOSE frames and :class:`Closed` events (PROTOCOL.md §4.4)."""

    NORMAL = 0
    PROTOCOL_VIOLATION = 1
    IDLE_TIMEOUT = 2
    HANDSHAKE_TIMEOUT = 3
    INTERNAL = 4


class State(enum.Enum):
    CONNECTING = "connecting"  # client: INITIAL sent, waiting for RETRY or ACCEPT
    ACCEPTED = "accepted"  # server: ACCEPT sent, waiting for the first protected packet
    ESTABLISHED = "established"
    CLOSING = "closing"  # we closed; answering stray packets with CLOSE until the linger ends
    DRAINING = "draining"  # the peer closed; staying silent until the linger ends
    TERMINATED = "terminated"


# Every state change the engine makes, keyed by (state, trigger). Anything else is a bug.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.CONNECTING, "accept"): State.ESTABLISHED,
    (State.CONNECTING, "timeout"): State.TERMINATED,
    (State.ACCEPTED, "data"): State.ESTABLISHED,
    (State.ACCEPTED, "timeout"): State.TERMINATED,
    (State.ACCEPTED, "close"): State.CLOSING,
    (State.ACCEPTED, "peer_close"): State.DRAINING,
    (State.ESTABLISHED, "close"): State.CLOSING,
    (State.ESTABLISHED, "peer_close"): State.DRAINING,
    (State.ESTABLISHED, "timeout"): State.TERMINATED,
    (State.CONNECTING, "close"): State.TERMINATED,
    (State.CLOSING, "linger_done"): State.TERMINATED,
    (State.DRAINING, "linger_done"): State.TERMINATED,
}

# Which packet types each state accepts; others are counted and dropped.
_ACCEPTS: dict[int, frozenset[State]] = {
    pk.RETRY: frozenset({State.CONNECTING}),
    pk.ACCEPT: frozenset({State.CONNECTING}),
    pk.INITIAL: frozenset({State.ACCEPTED, State.ESTABLISHED}),
    pk.DATA: frozenset({State.ACCEPTED, State.ESTABLISHED, State.CLOSING, State.DRAINING}),
}


_ESTABLISHED = State.ESTABLISHED
CLOSE_COPIES = 3
ARRIVAL_INTERVAL_S = 0.001
"""At most one ARRIVALS record per this interval (PROTOCOL.md §4.8): the sender's estimators
cost about 10 µs per record, so a bulk flow at 10 000 packets/s is sampled, not fed whole."""
ARRIVALS_PER_FRAME = 16
"""Most records sent with one ACK (the newest; older ones are dropped): about 130 bytes."""
RATE_FEED_S = 0.025
"""Shortest interval between two rate-control updates (libwebrtc's transport feedback comes
every 50-100 ms; ours comes with every ACK)."""
_DATA_HEADER = pk.DATA_HEADER_BYTES
_DATA_OVERHEAD = pk.DATA_OVERHEAD_BYTES
_PN_UNPACK = struct.Struct("!Q").unpack_from
_PN_OFFSET = 1 + pk.CID_BYTES
_ACCEPTS_DATA = _ACCEPTS[pk.DATA]


class Session:
    """One session. Build a client with :meth:`client`; listeners build servers."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        is_client: bool,
        local_cid: bytes,
        peer_addr: Address,
        keypair: KeyPair,
        now: float,
    ) -> None:
        self.config = config
        self.is_client = is_client
        self.local_cid = local_cid
        self.peer_cid = b""
        self.peer_addr = peer_addr
        self.state = State.CONNECTING if is_client else State.ACCEPTED
        self._keypair = keypair
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self._counters = Counters()
        self._rtt = RttEstimator(config.initial_rtt_s, config.min_rto_s, config.max_rto_s)
        self._acks = AckTracker(config.max_ack_delay_s, config.ack_every_packets)
        self._reassembler = Reassembler(config, self._counters, self._events)
        self._sender: Sender | None = None
        self._direct_limit = 0
        self._seal: PacketProtection | None = None
        self._open_aead: ChaCha20Poly1305 | None = None
        self._open_iv = 0
        self._replay = ReplayWindow(config.replay_window_packets)
        self._next_pn = 0
        self._idle_timeout_s = config.idle_timeout_s
        self._handshake_deadline = now + config.handshake_timeout_s
        self._resend_at: float | None = None
        self._resend_interval = config.initial_retransmit_s
        self._initial: pk.Initial | None = None
        self._retried = False
        self._accept_bytes = b""
        self._last_recv = now
        self._established_at = now
        self._linger_end: float | None = None
        self._close_request: tuple[str, int, float] | None = None
        self._close_packet_at = float("-inf")
        self._close_repeats: list[float] = []
        self._close_frame = b""
        # Loss recovery within deadlines (PROTOCOL.md §8.10), once both sides agreed to it.
        self._recovering = False
        self._nacker: NackScheduler | None = None
        self._parity: ParityDecoder | None = None
        # What receive_data looks at to know whether recovery has work after a batch (the
        # containers themselves, never replaced: no call on the hot path when all are empty).
        self._recovery_watch: tuple[Collection[object], ...] = ((), (), ())
        self._link = LinkEstimator()
        self._fresh_arrivals = False  # ARRIVALS came since rate control last heard
        self._rate_fed_at = -math.inf
        self._peer_wants_arrivals = False
        self._arrivals: list[Arrival] = []  # records waiting for the next ACK
        self._arrival_at = -math.inf

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def client(
        cls,
        config: SessionConfig,
        peer_addr: Address,
        now: float,
        randbytes: RandBytes = os.urandom,
    ) -> Session:
        """A client session; its INITIAL is ready in :meth:`datagrams_to_send`."""
        session = cls(
            config,
            is_client=True,
            local_cid=randbytes(pk.CID_BYTES),
            peer_addr=peer_addr,
            keypair=KeyPair.from_seed(randbytes(32)),
            now=now,
        )
        session._initial = pk.Initial(
            session.local_cid, session._keypair.public, b"", session._params().encode()
        )
        session._send_initial(now)
        return session

    @classmethod
    def server(
        cls,
        config: SessionConfig,
        initial: pk.Initial,
        peer_addr: Address,
        now: float,
        randbytes: RandBytes = os.urandom,
    ) -> Session:
        """A server session for a validated INITIAL (raises DecodeError if it is unusable)."""
        peer_params = pk.params_from_extensions(pk.parse_extensions(initial.extensions))
        session = cls(
            config,
            is_client=False,
            local_cid=randbytes(pk.CID_BYTES),
            peer_addr=peer_addr,
            keypair=KeyPair.from_seed(randbytes(32)),
            now=now,
        )
        session.peer_cid = initial.client_cid
        keys = session._derive(initial.client_public, initial.client_cid, session.local_cid)
        body = session._params().encode()
        header = pk.accept_header(
            initial.client_cid, session.local_cid, session._keypair.public, len(body) + TAG_BYTES
        )
        session._accept_bytes = header + seal_confirm(keys.confirm_key, header, body)
        session._start(keys, peer_params)
        session._out.append((session._accept_bytes, peer_addr))
        return session

    def _params(self) -> pk.Params:
        c = self.config
        features = pk.PARAM_WANTS_ARRIVALS if c.arrival_feedback else 0
        if c.recovery:
            features |= pk.PARAM_RECOVERY
        return pk.Params(
            int(c.idle_timeout_s * 1000),
            int(c.max_ack_delay_s * 1e6),
            c.max_datagram_bytes,
            features,
        )

    def _derive(self, peer_public: bytes, client_cid: bytes, server_cid: bytes) -> SessionKeys:
        shared = self._keypair.exchange(peer_public)
        if self.is_client:
            return derive_keys(shared, client_cid, server_cid, self._keypair.public, peer_public)
        return derive_keys(shared, client_cid, server_cid, peer_public, self._keypair.public)

    def _start(self, keys: SessionKeys, peer: pk.Params) -> None:
        """Install keys and the send machinery once both sides' parameters are known."""
        if self.is_client:
            self._seal = PacketProtection(keys.client_key, keys.client_iv)
            opener = PacketProtection(keys.server_key, keys.server_iv)
        else:
            self._seal = PacketProtection(keys.server_key, keys.server_iv)
            opener = PacketProtection(keys.client_key, keys.client_iv)
        # receive_data opens packets inline (its hot path), so only the parts are kept.
        self._open_aead = opener.aead
        self._open_iv = opener.iv
        config = self.config
        if peer.max_datagram_bytes < config.max_datagram_bytes:
            config = _with_datagram(config, peer.max_datagram_bytes)
        if peer.idle_timeout_ms:
            self._idle_timeout_s = min(self._idle_timeout_s, peer.idle_timeout_ms / 1000)
        self._peer_wants_arrivals = bool(peer.features & pk.PARAM_WANTS_ARRIVALS)
        congestion = _controller(config)
        pacing = congestion.pacing_bps is not None
        recovery = config.recovery and bool(peer.features & pk.PARAM_RECOVERY)
        self._sender = Sender(
            config,
            self._counters,
            self._rtt,
            congestion,
            peer.max_ack_delay_us / 1e6,
            nack=recovery and config.nack,
            fec=recovery and config.fec,
            pacer=Pacer(PacerConfig(mss_bytes=config.max_datagram_bytes)) if pacing else None,
        )
        if recovery:
            self._recovering = True
            reassembler = self._reassembler
            reassembler.track = True
            self._parity = ParityDecoder(config, reassembler, self._counters)
            self._recovery_watch = (reassembler.tracked, reassembler.gaps, self._parity.groups)
            if config.nack:
                reassembler.track_nacks = True
                room = config.max_datagram_bytes - pk.DATA_OVERHEAD_BYTES - 64  # beside an ACK
                self._nacker = NackScheduler(reassembler, self._rtt, config.nack_delay_s, room)
        # Messages this short may fit one packet whole (the direct path); longer never do.
        self._direct_limit = config.max_datagram_bytes - pk.DATA_OVERHEAD_BYTES

    def _transition(self, trigger: str) -> None:
        self.state = _TRANSITIONS[(self.state, trigger)]

    # -- public API --------------------------------------------------------------------------

    @property
    def is_established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def is_terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def target_bitrate_bps(self) -> float | None:
        """The media bitrate the congestion controller asks for, for an encoder to follow;
        None before the session is up or with a controller that has no opinion."""
        return self._sender.target_bps if self._sender is not None else None

    @property
    def send_queue_bytes(self) -> int:
        """Bytes of messages not yet sent, or (reliable) not yet acknowledged."""
        return self._sender.queued_bytes if self._sender is not None else 0

    def send(
        self, data: bytes, *, channel: int = 0, deadline_s: float | None = None, now: float
    ) -> int:
        """Queue a message; return its id on ``channel``.

        ``deadline_s`` counts from ``now``: once it passes, the sender stops repairing the
        message and the receiver discards what it has of it and reports it late.
        """
        if self.state is not State.ESTABLISHED or self._sender is None:
            raise UsageError(f"cannot send in state {self.state.value}")
        if self._close_request is not None:
            raise UsageError("session is closing")
        if deadline_s is not None and deadline_s <= 0:
            raise UsageError("deadline_s must be positive")
        deadline = None if deadline_s is None else now + deadline_s
        if type(data) is not bytes:
            data = bytes(data)
        sender = self._sender
        if (
            len(data) < self._direct_limit
            and sender.can_send_direct(now)
            and self._close_request is None
        ):
            acks = self._acks
            pn = self._next_pn
            ack = self._ack_frames(now) if acks.has_unacked else None
            direct = sender.send_direct(channel, data, deadline, now, pn, ack)
            if direct is not None:
                mid, payload = direct
                self._emit(pn, payload, now)
                return mid
            if ack is not None:  # it did not fit beside the message: send it on its own
                ack_packet = sender.build(now, pn, ack, True)
                if ack_packet is not None:
                    self._emit(pn, ack_packet, now)
        return sender.queue_message(channel, data, deadline, now)

    def close(self, now: float, reason: str = "closed", code: int = CloseCode.NORMAL) -> None:
        """Close gracefully: wait (bounded) for reliable data to be acknowledged, then send
        CLOSE; both sides get a :class:`Closed` event."""
        if self.state is State.ESTABLISHED:
            if self._close_request is None:
                flush_until = now + self.config.close_flush_timeout_s
                self._close_request = (reason, int(code), flush_until)
        elif self.state is State.ACCEPTED:
            self._close_now(now, reason, int(code))
        elif self.state is State.CONNECTING:
            self._terminate(reason, int(code), by_peer=False, trigger="close")

    def next_event(self) -> Event | None:
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if type(event) is Message:
            self._reassembler.undelivered_bytes -= len(event.data)
        return event

    def stats(self, now: float | None = None) -> SessionStats:
        """A snapshot of the counters and the link estimate; ``now`` (the adapter's clock)
        dates ``link.quality_since_s`` and goodput (else the last time the link was updated)."""
        c = self._counters
        rtt = self._rtt
        sender = self._sender
        loss = sender.loss if sender is not None else LossTracker()
        return SessionStats(
            srtt_ms=rtt.srtt_s * 1000,
            rttvar_ms=rtt.rttvar_s * 1000,
            min_rtt_ms=None if rtt.samples == 0 else rtt.min_s * 1000,
            rto_ms=rtt.rto_s() * 1000,
            packets_sent=c.packets_sent,
            packets_received=c.packets_received,
            bytes_sent=c.bytes_sent,
            bytes_received=c.bytes_received,
            packets_lost=c.packets_lost,
            retransmissions=c.retransmissions,
            messages_sent=c.messages_sent,
            messages_delivered=c.messages_delivered,
            message_bytes_delivered=c.message_bytes_delivered,
            messages_late=c.messages_late,
            messages_dropped=c.messages_dropped,
            messages_expired=c.messages_expired,
            messages_superseded=c.messages_superseded,
            decode_failures=c.decode_failures,
            replays_rejected=c.replays_rejected,
            nacks_sent=c.nacks_sent,
            nacks_received=c.nacks_received,
            nack_repairs=c.nack_repairs,
            repairs_too_late=c.repairs_too_late,
            fec_packets_sent=c.fec_packets_sent,
            fec_recovered=c.fec_recovered,
            window_bytes=sender.window_bytes if sender else 0,
            bytes_in_flight=sender.bytes_in_flight if sender else 0,
            send_queue_bytes=sender.queued_bytes if sender else 0,
            reassembly_bytes=self._reassembler.held_bytes,
            undelivered_bytes=self._reassembler.undelivered_bytes,
            link=self._link.snapshot(now, rtt, loss, None if sender is None else sender.target_bps),
        )

    # -- input -------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram. Bad bytes are counted and dropped; nothing from the peer raises."""
        try:
            ptype = pk.packet_type(data)
            if self.state not in _ACCEPTS[ptype]:
                raise DecodeError(f"packet type 0x{ptype:02x} not expected now")
            if ptype == pk.DATA:
                self.receive_data((data,), addr, now)
            elif ptype == pk.ACCEPT:
                self._on_accept(data, addr, now)
            elif ptype == pk.RETRY:
                self._on_retry(data, now)
            else:
                self._on_initial_again(data, addr)
        except DecodeError:
            self._counters.decode_failures += 1

    def _on_retry(self, data: bytes, now: float) -> None:
        retry = pk.decode_retry(data)
        if retry.client_cid != self.local_cid or self._retried or self._initial is None:
            raise DecodeError("unexpected RETRY")
        self._retried = True  # one retry per attempt: a second could be an attacker's loop
        self._initial = pk.Initial(
            self._initial.client_cid, self._initial.client_public, retry.token,
            self._initial.extensions,
        )  # fmt: skip
        self._resend_interval = self.config.initial_retransmit_s
        self._send_initial(now)

    def _on_accept(self, data: bytes, addr: Address, now: float) -> None:
        accept = pk.decode_accept(data)
        if accept.client_cid != self.local_cid:
            raise DecodeError("ACCEPT for another connection")
        keys = self._derive(accept.server_public, self.local_cid, accept.server_cid)
        body = open_confirm(keys.confirm_key, accept.header, accept.sealed)
        params = pk.params_from_extensions(pk.parse_extensions(body))
        self.peer_cid = accept.server_cid
        self.peer_addr = addr
        self._start(keys, params)
        self._transition("accept")
        self._resend_at = None
        self._last_recv = now
        self._events.append(Connected(peer_addr=addr))
        assert self._sender is not None
        self._sender.queue_ping()  # the listener turns ESTABLISHED on our first protected packet

    def _on_initial_again(self, data: bytes, addr: Address) -> None:
        """The client resent its INITIAL: our ACCEPT was lost. Answer with the same bytes."""
        initial = pk.decode_initial(data)
        if self.state is State.ACCEPTED and initial.client_cid == self.peer_cid:
            self._out.append((self._accept_bytes, addr))

    def receive_datagrams(self, datagrams: Sequence[tuple[bytes, Address]], now: float) -> None:
        """Feed several datagrams (one read's worth): as :meth:`receive_datagram` each, with
        runs of DATA from one address taken in one :meth:`receive_data` call."""
        if self.state not in _ACCEPTS_DATA:
            for data, addr in datagrams:
                self.receive_datagram(data, addr, now)
            return
        start = 0
        count = len(datagrams)
        while start < count:
            addr = datagrams[start][1]
            end = start + 1
            while end < count and datagrams[end][1] == addr:
                end += 1
            self.receive_data([data for data, _ in datagrams[start:end]], addr, now)
            start = end

    def receive_data(self, datagrams: Sequence[bytes], addr: Address, now: float) -> None:
        """Feed DATA datagrams that came from ``addr`` (one read's worth; a GRO batch is many).

        The hot path of the receiver, so the per-packet steps of :meth:`receive_datagram` are
        done here in one loop: header checks, replay window, AEAD open, then the bulk lane or
        the full frame processing. Bad datagrams are counted and dropped; nothing raises.
        """
        if self.state not in _ACCEPTS_DATA:
            self._counters.decode_failures += len(datagrams)
            return
        replay = self._replay
        highest_before = replay.highest
        aead = self._open_aead
        assert aead is not None
        iv = self._open_iv
        local_cid = self.local_cid
        take_lane = self._reassembler.take_lane
        acks = self._acks
        counters = self._counters
        established = self.state is _ESTABLISHED
        opened = 0
        opened_bytes = 0
        last_pn = -1
        # Bulk pieces arrive in packet-number order; their ACK bookkeeping is one call per
        # run of consecutive numbers instead of one per packet.
        run_first = run_last = -2
        for data in datagrams:
            size = len(data)
            if size < _DATA_OVERHEAD or data[0] != pk.DATA or not data.startswith(local_cid, 1):
                counters.decode_failures += 1
                continue
            pn = _PN_UNPACK(data, _PN_OFFSET)[0]
            if pn <= replay.highest and not replay.is_fresh(pn):
                counters.replays_rejected += 1
                continue
            try:
                payload = aead.decrypt(
                    (iv ^ pn).to_bytes(12, "big"), data[_DATA_HEADER:], data[:_DATA_HEADER]
                )
            except InvalidTag:
                counters.decode_failures += 1
                continue
            replay.mark(pn)
            last_pn = pn
            if not opened:
                self._last_recv = now
                if addr != self.peer_addr:
                    self.peer_addr = addr  # authenticated: the peer's address changed
            opened += 1
            opened_bytes += size
            if established and take_lane(payload):
                # Bulk data: the next piece of the message the last packet added to.
                if pn == run_last + 1:
                    run_last = pn
                    continue
                if run_last >= 0:
                    acks.on_eliciting_run(run_first, run_last, now)
                run_first = run_last = pn
                continue
            if run_last >= 0:
                acks.on_eliciting_run(run_first, run_last, now)
                run_first = run_last = -2
            self._on_payload(payload, pn, addr, now)
            established = self.state is _ESTABLISHED
        if run_last >= 0:
            acks.on_eliciting_run(run_first, run_last, now)
        counters.packets_received += opened
        counters.bytes_received += opened_bytes
        if opened and self._peer_wants_arrivals and now - self._arrival_at >= ARRIVAL_INTERVAL_S:
            self._record_arrival(last_pn, now)
        if self._recovering and opened:
            tracked, gaps, groups = self._recovery_watch
            if tracked or gaps or groups:
                self._after_receive(now, highest_before, opened)

    def _after_receive(self, now: float, highest_before: int, opened: int) -> None:
        """Recovery after a batch of datagrams: rebuild what waiting parity groups now can,
        and note which tracked messages moved (for NACKs)."""
        if self.state is not _ESTABLISHED:
            return
        parity = self._parity
        if parity is not None and parity.groups and parity.retry(now) == VIOLATION:
            self._violation(now, "parity contradicts the fragments of its message")
            return
        nacker = self._nacker
        if nacker is not None:
            nacker.on_batch(now, highest_before, self._replay.highest, opened)

    def _record_arrival(self, pn: int, now: float) -> None:
        """Note when packet ``pn``, the last of a read, arrived (sent with the next ACK)."""
        self._arrival_at = now
        records = self._arrivals
        if len(records) >= MAX_ARRIVALS:
            del records[0]  # no ACK for a while: the oldest records are the least useful
        counters = self._counters
        records.append((pn, int(now * 1e6), counters.packets_received, counters.bytes_received))

    def _ack_frames(self, now: float) -> bytes:
        """The ACK frame due now, followed by the waiting ARRIVALS records if any."""
        ack = self._acks.frame(now)
        records = self._arrivals
        if not records:
            return ack
        self._arrivals = []
        return ack + encode_arrivals(records[-ARRIVALS_PER_FRAME:])

    def _on_payload(self, payload: bytes, pn: int, addr: Address, now: float) -> None:
        """Act on an authenticated payload (§4.7)."""
        state = self.state
        if state is not _ESTABLISHED:
            if state is State.CLOSING:
                self._answer_with_close(now)
                return
            if state is not State.ACCEPTED:
                return  # DRAINING or TERMINATED: silence
            self._transition("data")
            self._events.append(Connected(peer_addr=addr))
        try:
            if payload and payload[0] == FRAGMENT:
                # A packet that is one fragment and nothing else skips the frame list.
                kind, channel, mid, total, offset, lifetime, piece, end = parse_fragment(payload, 1)
                if end == len(payload):
                    status = self._reassembler.on_piece(
                        kind, channel, mid, total, offset, lifetime, piece, now
                    )
                    if status == ACCEPTED:
                        self._acks.on_packet(pn, True, now)
                    elif status == VIOLATION:
                        self._violation(now, "fragment breaks the channel or size rules")
                    return
            frames = parse_frames(payload)
        except DecodeError as exc:
            self._violation(now, str(exc))
            return
        eliciting = False
        refused = False
        ping = False
        feedback = False
        reassembler = self._reassembler
        for frame in frames:
            ftype = type(frame)
            if ftype is FragmentFrame:
                eliciting = True
                status = reassembler.on_fragment(frame, now)  # type: ignore[arg-type]
            elif ftype is AckFrame:
                if frame.largest >= self._next_pn:  # type: ignore[union-attr]
                    status = VIOLATION  # acknowledges a packet never sent (RFC 9000 §13.1)
                else:
                    assert self._sender is not None
                    self._sender.on_ack(frame, now)  # type: ignore[arg-type]
                    feedback = True
                    continue
            elif ftype is ArrivalsFrame:
                if self.config.arrival_feedback:  # else we never asked: ignore them
                    self._link.on_arrivals(frame.packets)  # type: ignore[union-attr]
                    self._fresh_arrivals = True
                    feedback = True
                continue
            elif ftype is CloseFrame:
                self._on_peer_close(frame, now)  # type: ignore[arg-type]
                return
            elif ftype is AbandonFrame:
                eliciting = True
                status = reassembler.on_abandon(frame.channel, frame.message_id)  # type: ignore[union-attr]
            elif ftype is ParityFrame:
                eliciting = True
                if self._parity is None:
                    continue  # recovery not negotiated: the peer should not send it; ignore
                status = self._parity.on_parity(frame, now)  # type: ignore[arg-type]
            elif ftype is NackFrame:
                eliciting = True
                if self._recovering:
                    assert self._sender is not None
                    self._sender.on_nack(frame, now)  # type: ignore[arg-type]
                continue
            else:  # PING
                eliciting = True
                ping = True
                continue
            if status == VIOLATION:
                self._violation(now, "frame breaks the channel, size or ACK rules")
                return
            refused = refused or status == REFUSED
        if feedback:
            self._refresh_link(now)
        if not refused:
            # A refused reliable piece must not be acknowledged: leaving the packet out of
            # our ACKs makes the sender declare it lost and repair it.
            self._acks.on_packet(pn, eliciting, now)
            if ping:
                # A PING is a probe (keepalive, RTO): answer at once, so the prober's RTT
                # sample is the path's, not our ACK delay's (a pure receiver's only samples).
                self._acks.expedite()

    def _refresh_link(self, now: float) -> None:
        sender = self._sender
        assert sender is not None
        link = self._link
        if self._fresh_arrivals and now - self._rate_fed_at >= RATE_FEED_S:
            self._fresh_arrivals = False
            self._rate_fed_at = now
            rtt = self._rtt
            trend = link.trend
            sender.on_link(
                LinkSignals(
                    now=now,
                    trend=trend.state,
                    queue_delay_s=trend.owd_s,
                    loss_fraction=sender.loss.loss_pct / 100.0,
                    rtt_s=rtt.srtt_s if rtt.samples else None,
                    delivered_bps=link.delivered_bps,
                    min_rtt_s=rtt.min_s if rtt.samples else None,
                    bandwidth_bps=link.bandwidth_bps,
                )
            )
        previous = link.quality
        changed = link.refresh(
            now, self._rtt, sender.loss, sender.acked_bytes, sender.acked_packets
        )
        if changed is not None:
            snapshot = link.snapshot(now, self._rtt, sender.loss, sender.target_bps)
            self._events.append(
                LinkQualityChanged(quality=changed, previous=previous, link=snapshot)
            )

    def _violation(self, now: float, what: str) -> None:
        """Authenticated but malformed: the peer is broken, not an attacker. End it."""
        self._close_now(now, f"protocol violation: {what}", CloseCode.PROTOCOL_VIOLATION)

    def _on_peer_close(self, frame: CloseFrame, now: float) -> None:
        self._transition("peer_close")
        self._linger_end = now + self.config.close_linger_s
        self._events.append(Closed(reason=frame.reason, code=frame.code, by_peer=True))

    # -- output ------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything due now; call after every input and timer."""
        if self.state is State.ESTABLISHED:
            self._send_protected(now)
        out = self._out
        if out:
            self._out = []
        return out

    def _keepalive_at(self) -> float:
        """When a PING is due: an interval after the last ack-eliciting packet (ACK-only
        packets do not count, so a pure receiver still pings, and so still measures RTT)."""
        assert self._sender is not None
        last = max(self._sender.last_eliciting_at, self._established_at)
        return last + self.config.keepalive_interval_s

    def _send_protected(self, now: float) -> None:
        sender = self._sender
        assert sender is not None and self._seal is not None
        request = self._close_request
        if request is not None and (not sender.reliable_outstanding or now >= request[2]):
            self._close_now(now, request[0], request[1])
            return
        # The same expression as in next_timer: a difference could round below the interval
        # and leave the timer due forever.
        if now >= self._keepalive_at():
            sender.queue_ping()
        acks = self._acks
        counters = self._counters
        out = self._out
        peer = self.peer_addr
        link = self._link
        while sender.has_data or (acks.has_unacked and acks.due(now)):
            ack = self._ack_frames(now) if acks.has_unacked else None
            pn = self._next_pn
            payload = sender.build(now, pn, ack, ack is not None)
            if payload is None:
                break
            datagram = self._protect(pn, payload)
            link.on_sent(pn, now, not sender.has_data)
            out.append((datagram, peer))
            counters.packets_sent += 1
            counters.bytes_sent += len(datagram)

    def _emit(self, pn: int, payload: bytes, now: float) -> None:
        """Seal packet ``pn`` (sent on the direct path: nothing else waits) and queue it for
        :meth:`datagrams_to_send`."""
        datagram = self._protect(pn, payload)
        self._link.on_sent(pn, now, True)
        self._out.append((datagram, self.peer_addr))
        counters = self._counters
        counters.packets_sent += 1
        counters.bytes_sent += len(datagram)

    def _protect(self, pn: int, payload: bytes) -> bytes:
        assert self._seal is not None
        self._next_pn = pn + 1
        header = pk.DATA_HEADER.pack(pk.DATA, self.peer_cid, pn)
        return header + self._seal.seal(pn, header, payload)

    def _send_initial(self, now: float) -> None:
        assert self._initial is not None
        self._out.append((pk.encode_initial(self._initial), self.peer_addr))
        self._resend_at = now + self._resend_interval
        self._resend_interval *= 2

    def _close_now(self, now: float, reason: str, code: int) -> None:
        self._close_request = None
        room = self.config.max_datagram_bytes - pk.DATA_OVERHEAD_BYTES
        self._close_frame = encode_close(code, reason, room)
        self._transition("close")
        self._linger_end = now + self.config.close_linger_s
        # A lost CLOSE would leave the peer to find out by idle timeout, so it goes out
        # CLOSE_COPIES times spread over the linger, and again for any packet that arrives.
        step = self.config.close_linger_s / CLOSE_COPIES
        self._close_repeats = [now + step * i for i in range(1, CLOSE_COPIES)]
        self._answer_with_close(now)
        self._events.append(Closed(reason=reason, code=code, by_peer=False))

    def _answer_with_close(self, now: float) -> None:
        # At most one CLOSE per 10 ms, so a flood of stray packets cannot be amplified.
        if now - self._close_packet_at < 0.01 or self._seal is None:
            return
        self._close_packet_at = now
        self._out.append((self._protect(self._next_pn, self._close_frame), self.peer_addr))
        self._counters.packets_sent += 1

    def _terminate(
        self, reason: str, code: int, *, by_peer: bool, trigger: str = "timeout"
    ) -> None:
        self._transition(trigger)
        self._events.append(Closed(reason=reason, code=code, by_peer=by_peer))

    # -- timers ------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work; None when terminated."""
        state = self.state
        if state is State.TERMINATED:
            return None
        if state is State.CONNECTING:
            assert self._resend_at is not None
            return min(self._resend_at, self._handshake_deadline)
        if state is State.ACCEPTED:
            return self._handshake_deadline
        if state is not State.ESTABLISHED:
            assert self._linger_end is not None
            if self._close_repeats and state is State.CLOSING:
                return min(self._close_repeats[0], self._linger_end)
            return self._linger_end
        assert self._sender is not None
        deadline = min(
            self._last_recv + self._idle_timeout_s,
            self._keepalive_at(),
        )
        for t in (
            self._sender.next_timer(),
            self._acks.next_timer(),
            self._reassembler.next_timer(),
        ):
            if t is not None and t < deadline:
                deadline = t
        if self._recovering:
            nacker = self._nacker
            if nacker is not None:
                t = nacker.due
                if t is not None and t < deadline:
                    deadline = t
            parity = self._parity
            if parity is not None and parity.groups:
                t = parity.next_timer()
                if t is not None and t < deadline:
                    deadline = t
        if self._close_request is not None:
            deadline = min(deadline, self._close_request[2])
        return deadline

    def handle_timer(self, now: float) -> None:
        state = self.state
        if state is State.CONNECTING:
            if now >= self._handshake_deadline:
                self._terminate("handshake timeout", CloseCode.HANDSHAKE_TIMEOUT, by_peer=False)
            elif self._resend_at is not None and now >= self._resend_at:
                self._send_initial(now)
        elif state is State.ACCEPTED:
            if now >= self._handshake_deadline:
                self._transition("timeout")  # never announced; the listener forgets it
        elif state is State.ESTABLISHED:
            if now >= self._last_recv + self._idle_timeout_s:
                self._terminate("idle timeout", CloseCode.IDLE_TIMEOUT, by_peer=False)
                return
            assert self._sender is not None
            self._sender.handle_timer(now)
            self._reassembler.handle_timer(now)
            self._refresh_link(now)  # a pure receiver hears few ACKs: keep its class current
            if self._recovering:
                self._recovery_timer(now)
        elif self._linger_end is not None and now >= self._linger_end:
            self._transition("linger_done")
        elif state is State.CLOSING and self._close_repeats and now >= self._close_repeats[0]:
            del self._close_repeats[0]
            self._close_packet_at = float("-inf")
            self._answer_with_close(now)

    def _recovery_timer(self, now: float) -> None:
        if self._parity is not None:
            self._parity.handle_timer(now)
        nacker = self._nacker
        if nacker is None:
            return
        due = nacker.due
        if due is not None and due <= now:
            assert self._sender is not None
            frames = nacker.poll(now)
            for frame in frames:
                self._sender.queue_nack(frame)
            self._counters.nacks_sent += len(frames)


def _with_datagram(config: SessionConfig, max_datagram_bytes: int) -> SessionConfig:
    return replace(config, max_datagram_bytes=max_datagram_bytes)


def _controller(config: SessionConfig) -> CongestionController:
    """The congestion controller ``config.congestion`` names (or builds)."""
    choice = config.congestion
    if choice == "newreno":
        return NewReno(
            config.max_datagram_bytes, config.initial_window_packets, config.min_window_packets
        )
    if choice == "gcc":
        return GoogCC(
            GccConfig(
                mss_bytes=config.max_datagram_bytes,
                min_window_bytes=config.min_window_packets * config.max_datagram_bytes,
            )
        )
    assert callable(choice)
    return choice(config)
