"""framewire's transport: encrypted multi-channel sessions over UDP (sans-I/O engines plus
asyncio and poll adapters)."""

from transport import poll
from transport.aio import AsyncListener, AsyncSession, connect, listen
from transport.config import (
    LATEST,
    RELIABLE,
    UNRELIABLE,
    ChannelKind,
    SessionConfig,
)
from transport.congestion import LinkSignals
from transport.errors import (
    DecodeError,
    HandshakeTimeoutError,
    SessionClosedError,
    TransportError,
    UsageError,
)
from transport.events import (
    Closed,
    Connected,
    Event,
    LinkQualityChanged,
    Message,
    MessageLate,
    SessionAccepted,
)
from transport.gcc import GccConfig, GoogCC
from transport.listener import Listener
from transport.pacer import Pacer, PacerConfig
from transport.session import CloseCode, Session
from transport.stats import LinkStats, SessionStats

__all__ = [
    "LATEST",
    "RELIABLE",
    "UNRELIABLE",
    "AsyncListener",
    "AsyncSession",
    "ChannelKind",
    "CloseCode",
    "Closed",
    "Connected",
    "DecodeError",
    "Event",
    "GccConfig",
    "GoogCC",
    "HandshakeTimeoutError",
    "LinkQualityChanged",
    "LinkSignals",
    "LinkStats",
    "Listener",
    "Message",
    "MessageLate",
    "Pacer",
    "PacerConfig",
    "Session",
    "SessionAccepted",
    "SessionClosedError",
    "SessionConfig",
    "SessionStats",
    "TransportError",
    "UsageError",
    "connect",
    "listen",
    "poll",
]
