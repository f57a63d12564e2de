"""Counters kept by a session, and the frozen snapshot ``Session.stats()`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DelayTrend = Literal["rising", "steady", "falling"]
Quality = Literal["good", "moderate", "minimal", "unknown"]


class Counters:
    """Mutable counters shared by the parts of one session (plain ints on purpose: hot path)."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "decode_failures",
        "fec_packets_sent",
        "fec_recovered",
        "message_bytes_delivered",
        "messages_delivered",
        "messages_dropped",
        "messages_expired",
        "messages_late",
        "messages_sent",
        "messages_superseded",
        "nack_repairs",
        "nacks_received",
        "nacks_sent",
        "packets_lost",
        "packets_received",
        "packets_sent",
        "repairs_too_late",
        "replays_rejected",
        "retransmissions",
    )

    def __init__(self) -> None:
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.retransmissions = 0
        self.packets_lost = 0
        self.messages_sent = 0
        self.messages_delivered = 0
        self.message_bytes_delivered = 0
        self.messages_late = 0
        self.messages_dropped = 0
        self.messages_expired = 0
        self.messages_superseded = 0
        self.decode_failures = 0
        self.replays_rejected = 0
        self.nacks_sent = 0
        self.nacks_received = 0
        self.nack_repairs = 0
        self.repairs_too_late = 0
        self.fec_packets_sent = 0
        self.fec_recovered = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeStats:
    """A periodic latency spike found on the link: its period and typical height."""

    period_ms: float
    amplitude_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStats:
    """How the link this side sends on is doing (``docs/LINK.md`` says how each is computed).

    None means "not measured": no RTT sample yet, or no ARRIVALS from the peer (jitter, trend,
    queueing delay), or the sender never offered more than the link carries (bandwidth).
    """

    rtt_ms: float | None
    """Smoothed RTT (RFC 6298), the peer's ACK delay removed (RFC 9002 §5.3)."""
    rtt_var_ms: float | None
    min_rtt_ms: float | None
    jitter_ms: float | None
    """RFC 3550 §6.4.1 interarrival jitter of our packets at the peer."""
    loss_pct: float
    """Loss of our packets over the recent, adaptive window (up to 5 s)."""
    loss_total_pct: float
    burst_loss: float
    """Mean length of runs of consecutive losses in the recent window (0 without loss)."""
    goodput_mbps: float
    """Payload the peer acknowledged per second, over the last second."""
    bandwidth_mbps: float | None
    """Bottleneck bandwidth, BBR-style delivery rate; None until measurable."""
    owd_trend: DelayTrend | None
    """Queueing-delay gradient, libwebrtc GCC's trendline detector."""
    queue_delay_ms: float | None
    """One-way delay above its 10 s minimum."""
    spikes: SpikeStats | None
    quality: Quality
    quality_since_s: float
    """How long the class has held."""
    samples: int
    """ARRIVALS records the delay estimates are built from."""
    target_mbps: float | None = None
    """The rate controller's target bitrate for the application (None: the controller has
    none, e.g. NewReno)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStats:
    """A snapshot of one session. Times in milliseconds, sizes in bytes."""

    srtt_ms: float
    rttvar_ms: float
    min_rtt_ms: float | None
    rto_ms: float
    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    packets_lost: int
    retransmissions: int
    messages_sent: int
    messages_delivered: int
    message_bytes_delivered: int
    messages_late: int
    """Received side: messages whose deadline passed before they were whole."""
    messages_dropped: int
    """Received side: superseded (latest-only), or refused by a memory bound."""
    messages_expired: int
    """Sending side: messages whose deadline passed before they were sent or acknowledged."""
    messages_superseded: int
    """Sending side: latest-only messages replaced by a newer one before any of them left."""
    decode_failures: int
    replays_rejected: int
    nacks_sent: int
    """NACK frames sent: requests for pieces of messages that still had time."""
    nacks_received: int
    nack_repairs: int
    """Pieces queued for repair because the peer's NACK named them."""
    repairs_too_late: int
    """Repairs not sent because they could not arrive before the deadline
    (``now + srtt/2 >= deadline``): refused NACKs, and lost pieces of reliable messages,
    which then expire."""
    fec_packets_sent: int
    """PARITY frames sent."""
    fec_recovered: int
    """Received side: pieces (or one-piece messages) rebuilt from parity."""
    window_bytes: int
    bytes_in_flight: int
    send_queue_bytes: int
    reassembly_bytes: int
    undelivered_bytes: int
    """Whole messages delivered by the engine that the program has not taken yet."""
    link: LinkStats
    """The link estimate (this side's outgoing path)."""
