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
from transport.listener import Listener
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
    "HandshakeTimeoutError",
    "LinkQualityChanged",
    "LinkStats",
    "Listener",
    "Message",
    "MessageLate",
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
