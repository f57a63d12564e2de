"""Configuration of the session engine: one frozen dataclass, units in the field names."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transport.congestion import CongestionController


class ChannelKind(enum.IntEnum):
    """How a channel treats its messages. The value travels in every fragment (2 bits)."""

    RELIABLE = 0
    """Reliable and ordered: every message exactly once, in order, unless its deadline passes."""
    UNRELIABLE = 1
    """Delivered if it arrives whole, in arrival order; never repaired."""
    LATEST = 2
    """Unreliable, and a message older than one already delivered (or queued) is dropped."""


DEFAULT_CHANNELS: tuple[ChannelKind, ...] = (
    ChannelKind.RELIABLE,
    ChannelKind.UNRELIABLE,
    ChannelKind.LATEST,
)

CONGESTION_CONTROLLERS = ("gcc", "newreno")
"""Built-in congestion controllers, by name (``SessionConfig.congestion``)."""

CongestionFactory = Callable[["SessionConfig"], "CongestionController"]
"""Builds a session's controller from its (negotiated) configuration: the way to plug in a
controller of one's own."""

# Channel ids of the default layout, for readable call sites.
RELIABLE = 0
UNRELIABLE = 1
LATEST = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Settings of one session (and of a listener's sessions).

    ``channels[i]`` is the kind of channel ``i``. Both peers should use the same layout; the
    kind also travels with each fragment, so the receiver follows the sender's declaration.
    """

    channels: tuple[ChannelKind, ...] = DEFAULT_CHANNELS
    max_datagram_bytes: int = 1200
    max_message_bytes: int = 16 * 1024 * 1024
    max_reassembly_bytes: int = 64 * 1024 * 1024
    """Bound on bytes held for partly received or out-of-order messages, per session."""
    max_undelivered_bytes: int = 64 * 1024 * 1024
    """Whole messages the application has not taken yet; beyond this, new reliable messages
    are refused (repaired later: back-pressure on the sender) and others dropped."""
    max_send_queue_bytes: int = 256 * 1024 * 1024
    """Bound on bytes queued for sending; ``send`` raises UsageError beyond it."""
    reassembly_timeout_s: float = 5.0
    """Unreliable partial messages without a deadline are dropped after this long."""
    max_ordered_window: int = 65536
    """How far ahead of the next expected id a reliable message may be buffered."""
    handshake_timeout_s: float = 5.0
    initial_retransmit_s: float = 0.25
    idle_timeout_s: float = 15.0
    keepalive_interval_s: float = 1.0
    max_ack_delay_s: float = 0.005
    ack_every_packets: int = 2
    initial_rtt_s: float = 0.1
    min_rto_s: float = 0.05
    """RFC 6298 §2.4 asks for a 1 s floor; like Linux (200 ms) and KCP (30 ms) we go lower,
    because a realtime session cannot wait a second to repair one packet."""
    max_rto_s: float = 2.0
    """RFC 6298 §2.5 allows a cap of at least 60 s; a realtime session wants to retry a dead
    path at least this often, so it recovers within a couple of seconds once the path is back."""
    initial_window_packets: int = 32
    min_window_packets: int = 4
    replay_window_packets: int = 4096
    close_linger_s: float = 0.5
    """After a close, how long the engine answers stray packets with the close again."""
    close_flush_timeout_s: float = 2.0
    """``close()`` first waits this long at most for reliable data to be acknowledged."""
    retry_token_lifetime_s: float = 10.0
    max_sessions: int = 64
    """Listener only: sessions beyond this are refused (their handshakes are dropped)."""
    arrival_feedback: bool = True
    """Ask the peer to report when our packets arrive (ARRIVALS frames), from which the
    session estimates jitter, queueing-delay trend, spikes and bandwidth (``stats().link``)."""
    recovery: bool = True
    """Negotiate loss recovery within deadlines (``PARAM_RECOVERY``, PROTOCOL.md §8.10):
    NACK and PARITY frames for messages with a deadline. Off: neither is sent nor taken."""
    nack: bool = True
    """With recovery: ask for missing pieces of messages that still have time (NACK), and
    repair what the peer asks for."""
    fec: bool = True
    """With recovery: send parity (FEC) for messages with a deadline on unreliable and
    latest-only channels, sized from the measured loss and burst length."""
    fec_max_overhead: float = 0.2
    """Parity bytes at most this fraction of the data bytes they protect (on average). 0.2
    leaves room for NACK repairs within a 25 % budget at 5 % loss."""
    fec_min_loss_pct: float = 0.5
    """Below this loss (percent, the sender's recent window) no parity is sent at all."""
    nack_delay_s: float = 0.001
    """Reorder allowance: how long a hole (or a stalled message) waits before it is asked
    for. Small, because with a frame deadline of 33 ms and a 20 ms round trip a repair has
    about 3 ms to spare."""
    congestion: str | CongestionFactory = "newreno"
    """The congestion controller: ``"newreno"`` (a loss-based window, RFC 9002 §7: no target,
    no pacing; what bulk transfers want), ``"gcc"`` (delay-based rate control after WebRTC's
    Google Congestion Control, with a pacer and a target bitrate for encoders; needs
    ``arrival_feedback``), or a :data:`CongestionFactory`."""
    extra_socket_buffer_bytes: int = field(default=4 * 1024 * 1024)
    """Adapters ask the kernel for this much send/receive buffer."""

    def __post_init__(self) -> None:
        if isinstance(self.congestion, str):
            if self.congestion not in CONGESTION_CONTROLLERS:
                raise ValueError(
                    f"congestion: unknown controller {self.congestion!r} "
                    f"(one of {', '.join(CONGESTION_CONTROLLERS)}, or a factory)"
                )
            if self.congestion == "gcc" and not self.arrival_feedback:
                raise ValueError("congestion 'gcc' needs arrival_feedback (its delay signal)")
        elif not callable(self.congestion):
            raise ValueError("congestion must be a controller name or a factory")
        if not self.channels:
            raise ValueError("channels: at least one channel is needed")
        if len(self.channels) > 256:
            raise ValueError("channels: at most 256 channels (the id is one byte)")
        if not 256 <= self.max_datagram_bytes <= 65_507:
            raise ValueError("max_datagram_bytes must be within 256..65507")
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if self.max_reassembly_bytes < self.max_message_bytes:
            raise ValueError("max_reassembly_bytes must hold at least one largest message")
        if self.max_undelivered_bytes < 0:
            raise ValueError("max_undelivered_bytes must not be negative")
        if self.max_send_queue_bytes < self.max_message_bytes:
            raise ValueError("max_send_queue_bytes must hold at least one largest message")
        for name in (
            "reassembly_timeout_s",
            "handshake_timeout_s",
            "initial_retransmit_s",
            "idle_timeout_s",
            "keepalive_interval_s",
            "initial_rtt_s",
            "min_rto_s",
            "max_rto_s",
            "close_linger_s",
            "close_flush_timeout_s",
            "retry_token_lifetime_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_ack_delay_s < 0:
            raise ValueError("max_ack_delay_s must not be negative")
        if self.keepalive_interval_s >= self.idle_timeout_s:
            raise ValueError("keepalive_interval_s must be shorter than idle_timeout_s")
        if self.min_rto_s > self.max_rto_s:
            raise ValueError("min_rto_s must not exceed max_rto_s")
        if self.ack_every_packets < 1:
            raise ValueError("ack_every_packets must be at least 1")
        if self.min_window_packets < 2 or self.initial_window_packets < self.min_window_packets:
            raise ValueError("windows: need 2 <= min_window_packets <= initial_window_packets")
        if self.replay_window_packets < 64:
            raise ValueError("replay_window_packets must be at least 64")
        if self.max_ordered_window < 1 or self.max_sessions < 1:
            raise ValueError("max_ordered_window and max_sessions must be positive")
        if not 0 < self.fec_max_overhead <= 1:
            raise ValueError("fec_max_overhead must be within (0, 1]")
        if not 0 <= self.fec_min_loss_pct < 100:
            raise ValueError("fec_min_loss_pct must be within [0, 100)")
        if not self.nack_delay_s > 0:
            raise ValueError("nack_delay_s must be positive")
